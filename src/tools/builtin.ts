import { addToDate, dayNumber, wallClock, weekdayOf } from "./time";
import type { Tool } from "./tool";

// The tools every reply has unless the user turns them off: what time it is where the person is,
// and the date arithmetic a model gets wrong on its own ("what's the date on Friday?").

const DATE = { type: "string", pattern: "^\\d{4}-\\d{2}-\\d{2}$", description: "a calendar date, YYYY-MM-DD" };
const WHOLE = (what: string) => ({ type: "integer", minimum: -100_000, maximum: 100_000, description: what });

export function builtinTools(now: () => Date = () => new Date()): Tool[] {
  const today = (timeZone: string) => wallClock(now(), timeZone).date;
  return [
    {
      source: "builtin",
      name: "current_time",
      description:
        "The current date, time, weekday and UTC offset in the user's time zone. Use it for any question about now, today, or dates relative to today.",
      parameters: { type: "object", properties: {}, additionalProperties: false },
      run: async (_args, { timeZone }) => JSON.stringify({ timeZone, ...wallClock(now(), timeZone) }),
    },
    {
      source: "builtin",
      name: "date_add",
      description:
        "Moves a calendar date by years, months, weeks and days (negative to go back) and gives the weekday. " +
        "Without `date`, starts from today in the user's time zone. A day past the end of a month becomes that month's last day.",
      parameters: {
        type: "object",
        properties: {
          date: DATE,
          years: WHOLE("years to add"),
          months: WHOLE("months to add"),
          weeks: WHOLE("weeks to add"),
          days: WHOLE("days to add"),
        },
        additionalProperties: false,
      },
      run: async (a, { timeZone }) => {
        const from = (a.date as string | undefined) ?? today(timeZone);
        const date = addToDate(from, a as { years?: number; months?: number; weeks?: number; days?: number });
        if (!date) throw new Error(`${from} is not a date this tool can move (YYYY-MM-DD, years 0-9999)`);
        return JSON.stringify({ from, date, weekday: weekdayOf(date) });
      },
    },
    {
      source: "builtin",
      name: "days_between",
      description:
        "Whole days from one calendar date to another (negative if `to` is earlier). Without `from`, counts from today in the user's time zone.",
      parameters: { type: "object", properties: { from: DATE, to: DATE }, required: ["to"], additionalProperties: false },
      run: async (a, { timeZone }) => {
        const from = (a.from as string | undefined) ?? today(timeZone);
        const to = a.to as string;
        const [f, t] = [dayNumber(from), dayNumber(to)];
        if (f === undefined) throw new Error(`${from} is not a date`);
        if (t === undefined) throw new Error(`${to} is not a date`);
        return JSON.stringify({ from, to, days: t - f, toWeekday: weekdayOf(to) });
      },
    },
  ];
}
