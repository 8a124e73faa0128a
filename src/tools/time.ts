// Dates in a person's time zone, with Intl only (no date library): the built-in tools and the
// `timeZone` setting's check.

/** An IANA time zone name this runtime knows ("Europe/Paris", "UTC"). */
export function isTimeZone(name: string): boolean {
  if (!/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/.test(name) || name.length > 64) return false;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

const WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"] as const;

/** The wall-clock reading of `at` in `timeZone`. */
export function wallClock(at: Date, timeZone: string) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    })
      .formatToParts(at)
      .map((p) => [p.type, p.value]),
  ) as Record<string, string>;
  const date = `${parts.year}-${parts.month}-${parts.day}`;
  const time = `${parts.hour}:${parts.minute}:${parts.second}`;
  // The offset is the wall clock read as UTC less the instant (whole seconds).
  const offsetMin = Math.round((Date.parse(`${date}T${time}Z`) - Math.floor(at.getTime() / 1000) * 1000) / 60_000);
  const sign = offsetMin < 0 ? "-" : "+";
  const abs = Math.abs(offsetMin);
  const utcOffset = `${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
  return { date, time, weekday: weekdayOf(date), utcOffset, iso: `${date}T${time}${utcOffset}` };
}

/** A calendar date ("YYYY-MM-DD") as days since 1970-01-01; undefined for a date that does not exist. */
export function dayNumber(date: string): number | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  if (!m) return undefined;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const t = Date.UTC(y, mo - 1, d);
  const back = new Date(t);
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d) return undefined;
  return t / 86_400_000;
}

export const dateOf = (day: number): string => new Date(day * 86_400_000).toISOString().slice(0, 10);
export const weekdayOf = (date: string): string => WEEKDAYS[new Date(`${date}T00:00:00Z`).getUTCDay()]!;

/** `date` moved by whole years, months and days; a day past the new month's end becomes its last day (Jan 31 + 1 month = Feb 28/29). */
export function addToDate(date: string, o: { years?: number; months?: number; weeks?: number; days?: number }): string | undefined {
  if (dayNumber(date) === undefined) return undefined;
  const [y, mo, d] = date.split("-").map(Number) as [number, number, number];
  const months = y * 12 + (mo - 1) + (o.years ?? 0) * 12 + (o.months ?? 0);
  const ny = Math.floor(months / 12);
  const nm = months - ny * 12;
  const last = new Date(Date.UTC(ny, nm + 1, 0)).getUTCDate();
  const start = Date.UTC(ny, nm, Math.min(d, last)) / 86_400_000;
  const day = start + (o.weeks ?? 0) * 7 + (o.days ?? 0);
  const out = dateOf(day);
  return /^\d{4}-/.test(out) ? out : undefined;
}
