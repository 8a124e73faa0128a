import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv";
import type { JsonSchemaType, JsonSchemaValidator } from "@modelcontextprotocol/sdk/validation";

// A call's arguments against its tool's JSON schema, with the validator the MCP SDK already
// brings (Ajv). Compiled once per schema object: an MCP server's list replaces its schemas.

const ajv = new AjvJsonSchemaValidator();
const compiled = new WeakMap<object, JsonSchemaValidator<unknown>>();

/** The arguments as an object, or why they are not acceptable (said so the model can correct itself). */
export function checkArguments(
  schema: Record<string, unknown>,
  text: string,
): { ok: true; args: Record<string, unknown> } | { ok: false; error: string } {
  let args: unknown;
  try {
    // A call with no arguments may come with none at all.
    args = text.trim() === "" ? {} : JSON.parse(text);
  } catch {
    return { ok: false, error: "the arguments are not valid JSON" };
  }
  if (!args || typeof args !== "object" || Array.isArray(args)) return { ok: false, error: "the arguments must be a JSON object" };
  let validate = compiled.get(schema);
  if (!validate) {
    try {
      validate = ajv.getValidator(schema as JsonSchemaType);
    } catch {
      return { ok: false, error: "the tool's own schema cannot be used" };
    }
    compiled.set(schema, validate);
  }
  const r = validate(args);
  return r.valid
    ? { ok: true, args: args as Record<string, unknown> }
    : { ok: false, error: `the arguments do not match the schema: ${r.errorMessage}` };
}
