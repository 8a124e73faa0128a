// One line per event: JSON in production (for log shippers), readable text elsewhere.
// Every line passes through redaction of the configured secret values, whatever the caller put in it.

export type Level = "debug" | "info" | "warn" | "error";
export type Fields = Record<string, unknown>;
export type Logger = Record<Level, (msg: string, fields?: Fields) => void> & {
  child(fields: Fields): Logger;
  /** Whether lines at `level` are written (to skip building fields nobody will read). */
  enabled(level: Level): boolean;
};

const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function createLogger(o: {
  level: Level;
  json: boolean;
  secrets?: readonly (string | undefined)[];
  write?: (line: string) => void;
  base?: Fields;
}): Logger {
  const secrets = (o.secrets ?? []).filter((s): s is string => !!s && s.length >= 4);
  const write = o.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const redact = (s: string) => secrets.reduce((acc, secret) => acc.replaceAll(secret, "[redacted]"), s);

  const emit = (level: Level, msg: string, fields: Fields = {}) => {
    if (RANK[level] < RANK[o.level]) return;
    const all = { ...o.base, ...fields };
    const line = o.json
      ? JSON.stringify({ level, time: new Date().toISOString(), msg, ...all }, errorReplacer)
      : `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}${Object.keys(all).length ? ` ${JSON.stringify(all, errorReplacer)}` : ""}`;
    write(redact(line));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger({ ...o, base: { ...o.base, ...fields } }),
    enabled: (level) => RANK[level] >= RANK[o.level],
  };
}

function errorReplacer(_key: string, value: unknown) {
  return value instanceof Error ? { name: value.name, message: value.message } : value;
}

export const silentLogger: Logger = createLogger({ level: "error", json: true, write: () => {} });
