import * as v from "valibot";
import { outbound, type OutboundType } from "../../src/ws/protocol";

// Checks a frame the server really sent against its schema in src/ws/protocol.ts (the contract in
// docs/asyncapi.yaml): valid, and without a field the schema does not name (ERROR may carry details).

const strict = Object.fromEntries(
  Object.entries(outbound).map(([type, schema]) => {
    const object = schema.pipe[0];
    return [type, object.type === "loose_object" ? object : v.strictObject(object.entries)];
  }),
) as unknown as Record<OutboundType, v.GenericSchema>;

/** Problems with a server frame: [] when it matches the contract. */
export function frameProblems(f: Record<string, unknown>): string[] {
  const schema = strict[f.type as OutboundType];
  if (!schema) return [`${String(f.type)}: not a server frame type in src/ws/protocol.ts`];
  const r = v.safeParse(schema, f);
  return r.success ? [] : r.issues.map((i) => `${String(f.type)}.${v.getDotPath(i) ?? ""}: ${i.message}`);
}
