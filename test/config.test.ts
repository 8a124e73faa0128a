import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { ConfigError, loadConfig } from "../src/config";
import { createLogger } from "../src/log";

const fails = (env: Record<string, string>) => {
  try {
    loadConfig(env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
};

describe("config", () => {
  test("defaults run on the embedded store with the offline model", () => {
    const c = loadConfig({});
    expect(c.SERVER_PORT).toBe(8080);
    expect(c.ENVIRONMENT).toBe("development");
    expect(c.SQLITE_PATH).toBe("./data/pichat.db");
    expect(c.COSMOS_ENDPOINT).toBeUndefined();
    expect(c.IOT_HUB_ENABLE).toBe(false);
    expect(Object.isFrozen(c)).toBe(true);
  });

  test("a wrong value names the variable", () => {
    expect(fails({ SERVER_PORT: "http" })).toStartWith("SERVER_PORT:");
    expect(fails({ SERVER_PORT: "70000" })).toStartWith("SERVER_PORT:");
    expect(fails({ IOT_HUB_ENABLE: "sometimes" })).toStartWith("IOT_HUB_ENABLE:");
    expect(fails({ ENVIRONMENT: "prod" })).toStartWith("ENVIRONMENT:");
    expect(fails({ COSMOS_ENDPOINT: "not a url" })).toStartWith("COSMOS_ENDPOINT:");
  });

  test("half-configured dependencies are refused with the missing variable named", () => {
    expect(fails({ AZURE_OPENAI_ENDPOINT: "https://x.openai.azure.com", AZURE_OPENAI_KEY: "k" })).toStartWith(
      "AZURE_OPENAI_DEPLOYMENT_NAME:",
    );
    expect(fails({ IOT_HUB_ENABLE: "true" })).toStartWith("EVENT_HUB_COMPATIBLE_CONN_STR:");
    expect(fails({ IOT_HUB_ENABLE: "true", EVENT_HUB_COMPATIBLE_CONN_STR: "Endpoint=sb://x/;EntityPath=y" })).toStartWith(
      "IOT_HUB_CONNECTION_STRING:",
    );
  });

  test("a missing key means Azure identity, not an error", () => {
    expect(loadConfig({ COSMOS_ENDPOINT: "https://x.documents.azure.com:443/" }).COSMOS_KEY).toBeUndefined();
    expect(
      loadConfig({ AZURE_OPENAI_ENDPOINT: "https://x.openai.azure.com", AZURE_OPENAI_DEPLOYMENT_NAME: "d" }).AZURE_OPENAI_KEY,
    ).toBeUndefined();
    const iot = loadConfig({
      IOT_HUB_ENABLE: "true",
      EVENT_HUB_FULLY_QUALIFIED_NAMESPACE: "ns.servicebus.windows.net",
      EVENT_HUB_NAME: "telemetry",
      IOT_HUB_HOST_NAME: "hub.azure-devices.net",
    });
    expect(iot.IOT_HUB_ENABLE).toBe(true);
  });

  test("empty assignments count as unset", () => {
    expect(loadConfig({ COSMOS_ENDPOINT: "", SERVER_PORT: " " }).SERVER_PORT).toBe(8080);
  });

  test("production refuses a missing API_TOKEN, and never echoes a refused one", () => {
    expect(fails({ ENVIRONMENT: "production" })).toStartWith("API_TOKEN:");
    expect(loadConfig({ ENVIRONMENT: "production", API_TOKEN: "3f9c0a7e5b1d4c2a8e6f0b9d7c5a3e1f" }).API_TOKEN).toHaveLength(32);
  });

  test("a short or placeholder API_TOKEN or METRICS_TOKEN is refused in every environment, with the rule, never echoed", () => {
    for (const ENVIRONMENT of ["development", "test", "production"]) {
      for (const token of [
        "hunter2",
        "short",
        "change-me-to-a-long-random-string",
        "change-me-please-now-1234",
        "an-example-token-0123456789",
        "xxxxxxxxxxxxxxxxxxxx",
      ]) {
        for (const name of ["API_TOKEN", "METRICS_TOKEN"]) {
          const msg = fails({ ENVIRONMENT, API_TOKEN: "3f9c0a7e5b1d4c2a8e6f0b9d7c5a3e1f", [name]: token });
          expect(msg).toStartWith(`${name}: must be at least 16 characters and not a placeholder`);
          expect(msg).not.toContain(token);
          expect(msg.split("\n")).toHaveLength(1);
        }
      }
    }
    // Absent (or empty, as in a copied .env.example) is the only open mode.
    expect(loadConfig({ ENVIRONMENT: "development", API_TOKEN: "" }).API_TOKEN).toBeUndefined();
    expect(loadConfig({ METRICS_TOKEN: "9b1e4c7a2f5d8e0b3a6c" }).METRICS_TOKEN).toBe("9b1e4c7a2f5d8e0b3a6c");
  });

  test(".env.example copied as it is starts (open, development)", () => {
    const example = readFileSync(new URL("../.env.example", import.meta.url), "utf8");
    const env = Object.fromEntries([...example.matchAll(/^([A-Z][A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
    expect(Object.keys(env)).toContain("API_TOKEN");
    const c = loadConfig(env);
    expect(c.API_TOKEN).toBeUndefined();
    expect(c.ENVIRONMENT).toBe("development");
  });

  test("production with IoT Hub on needs DEVICE_DEFAULT_OWNER set explicitly; elsewhere it defaults to default", () => {
    const iot = {
      ENVIRONMENT: "production",
      API_TOKEN: "3f9c0a7e5b1d4c2a8e6f0b9d7c5a3e1f",
      IOT_HUB_ENABLE: "true",
      EVENT_HUB_COMPATIBLE_CONN_STR: "Endpoint=sb://x/;EntityPath=y",
      IOT_HUB_CONNECTION_STRING: "HostName=h;SharedAccessKeyName=s;SharedAccessKey=k",
    };
    expect(fails(iot)).toStartWith("DEVICE_DEFAULT_OWNER: production with IOT_HUB_ENABLE=true needs it set explicitly");
    for (const owner of ["none", "alice", "default"])
      expect(loadConfig({ ...iot, DEVICE_DEFAULT_OWNER: owner }).DEVICE_DEFAULT_OWNER).toBe(owner);
    expect(loadConfig({ ...iot, ENVIRONMENT: "development" }).DEVICE_DEFAULT_OWNER).toBe("default");
    expect(loadConfig({ ENVIRONMENT: "production", API_TOKEN: iot.API_TOKEN }).DEVICE_DEFAULT_OWNER).toBe("default");
  });

  test("every variable the schema reads is documented in .env.example", () => {
    const example = readFileSync(new URL("../.env.example", import.meta.url), "utf8");
    const documented = new Set([...example.matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1]));
    const src = readFileSync(new URL("../src/config.ts", import.meta.url), "utf8");
    const read = [...src.matchAll(/^ {2}([A-Z][A-Z0-9_]+):/gm)].map((m) => m[1]);
    expect(read.length).toBeGreaterThan(30);
    expect(read.filter((k) => !documented.has(k))).toEqual([]);
  });
});

describe("several replicas", () => {
  test("REDIS_URL without the shared Cosmos store is refused with one line naming it", () => {
    expect(() => loadConfig({ REDIS_URL: "redis://127.0.0.1:6379" })).toThrow(
      /^REDIS_URL: several replicas need the shared Cosmos DB store/,
    );
    expect(() => loadConfig({ REDIS_URL: "redis://127.0.0.1:6379", COSMOS_ENDPOINT: "https://localhost:8081/" })).not.toThrow();
    expect(() => loadConfig({ REDIS_URL: "http://x", COSMOS_ENDPOINT: "https://localhost:8081/" })).toThrow(/REDIS_URL: must be a redis/);
    expect(() => loadConfig({ REDIS_CLUSTER: "true" })).toThrow(/^REDIS_CLUSTER: needs REDIS_URL/);
  });
});

describe("start-up", () => {
  test("a short API_TOKEN exits 1 with one line naming API_TOKEN and the rule, in production and in development", async () => {
    for (const [ENVIRONMENT, API_TOKEN] of [
      ["production", "change-me"],
      ["development", "hunter2"],
    ]) {
      const proc = Bun.spawn(["bun", "src/index.ts"], {
        cwd: new URL("..", import.meta.url).pathname,
        env: { PATH: process.env.PATH, ENVIRONMENT, API_TOKEN, SERVER_PORT: "0", HOST: "127.0.0.1" },
        stdout: "pipe",
        stderr: "pipe",
      });
      const code = await proc.exited;
      const err = await new Response(proc.stderr).text();
      expect(code).toBe(1);
      expect(err.trim().split("\n")).toHaveLength(1);
      expect(err).toContain("API_TOKEN: must be at least 16 characters");
      expect(err).not.toContain(API_TOKEN!);
    }
  });

  test("a store that cannot be opened (an unwritable SQLite path) exits 1 and says why, rather than 0", async () => {
    const proc = Bun.spawn(["bun", "src/index.ts"], {
      cwd: new URL("..", import.meta.url).pathname,
      env: { PATH: process.env.PATH, SERVER_PORT: "0", HOST: "127.0.0.1", SQLITE_PATH: "/proc/pichat-cannot-write-here/pichat.db" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const code = await proc.exited;
    const out = await new Response(proc.stdout).text();
    expect(code).toBe(1);
    expect(out).toContain("could not start");
    expect(out).not.toContain("PiChat backend listening");
  });
});

describe("logger", () => {
  test("secret values are redacted from every line, whatever the caller passed", () => {
    const lines: string[] = [];
    const log = createLogger({ level: "debug", json: true, secrets: ["sk-abcdef123456", undefined], write: (l) => lines.push(l) });
    log.error("failed with sk-abcdef123456", { error: new Error("auth sk-abcdef123456 rejected"), conn: "Endpoint=x;Key=sk-abcdef123456" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain("sk-abcdef123456");
    expect(lines[0]).toContain("[redacted]");
    expect(JSON.parse(lines[0]!).level).toBe("error");
  });

  test("levels below the configured one are dropped", () => {
    const lines: string[] = [];
    const log = createLogger({ level: "warn", json: false, write: (l) => lines.push(l) });
    log.info("quiet");
    log.warn("loud");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("WARN");
  });
});
