import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { toJsonSchema, type ConversionConfig, type JsonSchema } from "@valibot/to-json-schema";
import * as v from "valibot";
import pkg from "../package.json";
import { ChatSchema, SearchHitSchema } from "../src/records";
import { ERROR_CODES } from "../src/ws/errors";
import {
  answers,
  closes,
  inbound,
  originalWebUi,
  outbound,
  PublicMessageSchema,
  type InboundType,
  type OutboundType,
} from "../src/ws/protocol";

// docs/asyncapi.yaml from the frame schemas in src/ws/protocol.ts: `bun run protocol` writes it, and
// test/asyncapi.test.ts fails when the checked-in file is not what this makes (and validates it with
// @asyncapi/parser). Payloads come from @valibot/to-json-schema; the document around them is ours.

export const SPEC_PATH = join(import.meta.dir, "..", "docs", "asyncapi.yaml");

const SHARED = { Chat: ChatSchema, Message: PublicMessageSchema, SearchHit: SearchHitSchema };
const config = (typeMode: "input" | "output"): ConversionConfig => ({
  target: "draft-07",
  typeMode,
  // A custom check (v.check) has no JSON Schema form: its message becomes part of the description.
  errorMode: "ignore",
  definitions: SHARED,
  overrideRef: ({ referenceId }) => `#/components/schemas/${referenceId}`,
  overrideAction: ({ valibotAction: a, jsonSchema }) => {
    const message = a.type === "check" && "message" in a ? a.message : undefined;
    if (typeof message !== "string") return undefined;
    return { ...jsonSchema, description: [jsonSchema.description, `must hold: ${message}`].filter(Boolean).join("; ") };
  },
});
const plain = ({ $schema: _s, $defs: _d, ...rest }: JsonSchema) => rest;

/**
 * What each error code means, from the table in docs/protocol.md §6 (the guide; test/docs.test.ts keeps a
 * row there for every code the server raises): code -> [{raisedBy, meaning, extra, retryAfterMs}].
 */
function errorCodeTable(): Record<string, { raisedBy: string; meaning: string; extra: string; retryAfterMs: string }[]> {
  const md = readFileSync(join(import.meta.dir, "..", "docs", "protocol.md"), "utf8");
  const start = md.indexOf("\n## 6. ");
  const section = md.slice(start, md.indexOf("\n## ", start + 1));
  const table: Record<string, { raisedBy: string; meaning: string; extra: string; retryAfterMs: string }[]> = {};
  for (const m of section.matchAll(/^\| `([A-Z_]+)` \|(.*)\|\s*$/gm)) {
    const [raisedBy = "", meaning = "", extra = "", retryAfterMs = ""] = m[2]!.split(" | ").map((c) => c.trim());
    (table[m[1]!] ??= []).push({ raisedBy, meaning, extra, retryAfterMs });
  }
  return table;
}

const ref = (path: string) => ({ $ref: path });
const WS = ref("#/channels/ws");
const msg = (name: string) => ref(`#/channels/ws/messages/${name}`);

/** A client frame: `type`, maybe `requestId`, and its arguments at the top level or in `payload` (payload wins). */
function clientPayload(type: InboundType): JsonSchema {
  const args = plain(toJsonSchema(inbound[type], config("input")));
  return {
    type: "object",
    ...(args.description ? { description: args.description } : {}),
    properties: {
      type: { const: type },
      requestId: { type: "string", maxLength: 200, description: `copied onto the answer (${answers[type]} or ERROR)` },
      ...(args.properties ?? {}),
      payload: { type: "object", description: "the arguments may sit here instead of at the top level; where both have one, payload wins" },
    },
    required: ["type", ...((args.required as string[] | undefined) ?? [])],
  };
}

const serverPayload = (type: OutboundType) => plain(toJsonSchema(outbound[type], config("output")));
const description = (schema: v.GenericSchema) => {
  const d = v.getDescription(schema);
  if (!d) throw new Error("every server frame schema needs a v.description");
  return d;
};
/** Server frames that answer no request of their own: the events a client listens for. */
const answering = new Set<string>(Object.values(answers));

export function asyncapiDocument() {
  const clientTypes = Object.keys(inbound) as InboundType[];
  const serverTypes = Object.keys(outbound) as OutboundType[];
  const clash = clientTypes.filter((t) => (serverTypes as string[]).includes(t));
  if (clash.length) throw new Error(`frame types used both ways: ${clash.join(", ")}`);
  const messages = {
    ...Object.fromEntries(
      clientTypes.map((t) => [
        t,
        { name: t, title: t, summary: `Client → server: ${t}. Answered by ${answers[t]} (or ERROR).`, payload: clientPayload(t) },
      ]),
    ),
    ...Object.fromEntries(
      serverTypes.map((t) => [
        t,
        { name: t, title: t, summary: `Server → client: ${description(outbound[t])}`, payload: serverPayload(t) },
      ]),
    ),
  };
  const operations = {
    ...Object.fromEntries(
      clientTypes.map((t) => [
        t,
        {
          action: "receive",
          channel: WS,
          summary: `${t}: the server answers with ${answers[t]}, or ERROR, carrying the same requestId.`,
          messages: [msg(t)],
          reply: { channel: WS, messages: [msg(answers[t]), msg("ERROR")] },
        },
      ]),
    ),
    ...Object.fromEntries(
      serverTypes.map((t) => [
        `on${t}`,
        {
          action: "send",
          channel: WS,
          summary: answering.has(t) ? `${t}, as an answer (with the request's requestId) or pushed` : `${t}, pushed by the server`,
          messages: [msg(t)],
        },
      ]),
    ),
  };
  const sharedSchemas = Object.fromEntries(
    Object.entries(SHARED).map(([name, schema]) => [
      name,
      plain(toJsonSchema(schema as v.GenericSchema, { ...config("output"), definitions: {} })),
    ]),
  );
  return {
    asyncapi: "3.0.0",
    info: {
      title: "PiChat /ws",
      version: pkg.version,
      description: [
        "The contract of PiChat's WebSocket protocol, generated from src/ws/protocol.ts by `bun run protocol`; docs/protocol.md is the guide with examples.",
        "Every frame is one JSON object in a text frame with an UPPERCASE `type`. A request may carry `requestId` (a string of at most 200 characters): its answer, or the ERROR it causes, carries it back.",
        "Frames of one connection are handled one at a time, in order. Unknown fields are ignored; clients must ignore fields and frame types they do not know.",
        "Reconnecting: reload history or RESUME each reply from the last `seq` applied; resend a SEND_MESSAGE whose fate is unknown with the same message id (the server stores and answers it once; MESSAGE_ACCEPTED says duplicate).",
        "Old clients keep working: x-original-web-ui lists what the original React web UI sends, handles and relies on; it ignores every other frame and field.",
      ].join("\n\n"),
      "x-original-web-ui": { sends: [...originalWebUi.sends], handles: [...originalWebUi.handles], rules: [...originalWebUi.rules] },
    },
    defaultContentType: "application/json",
    servers: {
      local: {
        host: "localhost:8080",
        protocol: "ws",
        description: "SERVER_PORT (8080 by default); use wss behind TLS.",
        security: [
          ref("#/components/securitySchemes/bearer"),
          ref("#/components/securitySchemes/subprotocol"),
          ref("#/components/securitySchemes/query"),
        ],
      },
    },
    channels: {
      ws: {
        address: "/ws",
        title: "The chat socket",
        description: [
          "One socket per client. Sign in at the upgrade with one of the security schemes (the first present wins): an Authorization header, a `bearer.<token>` subprotocol (browsers; also offer `pichat`, which the server answers with), or `?token=`.",
          "The token is the legacy API_TOKEN, a personal token (`pc_…`) or an OpenID Connect JWT. A refused upgrade is a plain HTTP answer: 401 UNAUTHORIZED, 403 ORIGIN_NOT_ALLOWED, 429 TOO_MANY_CONNECTIONS_FROM_ADDRESS, 503 TOO_MANY_CONNECTIONS / SHUTTING_DOWN / STORE_UNAVAILABLE (with Retry-After).",
          "No application error closes the socket; the server closes it only as listed in x-close-codes. An ERROR frame's `code` is one of x-error-codes (which requests raise it, what it means, its extra fields).",
        ].join("\n\n"),
        messages: Object.fromEntries(Object.keys(messages).map((t) => [t, ref(`#/components/messages/${t}`)])),
        bindings: {
          ws: {
            method: "GET",
            query: { type: "object", properties: { token: { type: "string", description: "the token (it then shows in URLs and logs)" } } },
            headers: {
              type: "object",
              properties: {
                Authorization: { type: "string", description: "Bearer <token>" },
                "Sec-WebSocket-Protocol": { type: "string", description: "pichat, bearer.<token>" },
              },
            },
          },
        },
        "x-close-codes": closes.map((c) => ({ ...c })),
        "x-error-codes": ((table) => Object.fromEntries(ERROR_CODES.map((code) => [code, table[code] ?? []])))(errorCodeTable()),
      },
    },
    operations,
    components: {
      schemas: sharedSchemas,
      messages,
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "Authorization: Bearer <token> (non-browser clients)." },
        subprotocol: {
          type: "httpApiKey",
          in: "header",
          name: "Sec-WebSocket-Protocol",
          description: "`bearer.<token>` as a subprotocol, offered beside `pichat` (browsers, which cannot set headers).",
        },
        query: { type: "httpApiKey", in: "query", name: "token", description: "`?token=<token>`." },
      },
    },
  };
}

export const asyncapiYaml = () =>
  `# Generated by \`bun run protocol\` from src/ws/protocol.ts: do not edit by hand.\n${Bun.YAML.stringify(asyncapiDocument(), null, 2)}\n`;

if (import.meta.main) {
  writeFileSync(SPEC_PATH, asyncapiYaml());
  console.log(`protocol: wrote ${SPEC_PATH}`);
}
