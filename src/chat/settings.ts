import * as v from "valibot";
import type { Store } from "../store/store";
import { isTimeZone } from "../tools/time";

/** A system prompt's text; `name` is the setting's, for its errors. */
const promptText = (name: string) =>
  v.pipe(
    v.string(`${name} must be a string`),
    v.trim(),
    v.minLength(1, `${name} must not be empty`),
    v.maxLength(4000, `${name} must be at most 4000 characters`),
  );

// What a chat owner may tune. null clears a setting back to the server's default.
export const SettingsPatchSchema = v.object({
  systemPrompt: v.nullish(promptText("systemPrompt")),
  /** The system prompt for questions from the user's voice devices (else DEVICE_SYSTEM_PROMPT). */
  deviceSystemPrompt: v.nullish(promptText("deviceSystemPrompt")),
  temperature: v.nullish(
    v.pipe(
      v.number("temperature must be a number"),
      v.minValue(0, "temperature must be from 0 to 2"),
      v.maxValue(2, "temperature must be from 0 to 2"),
    ),
  ),
  model: v.nullish(
    v.pipe(v.string("model must be a string"), v.trim(), v.regex(/^[\w.:/-]{1,100}$/, "model must be a model or deployment name")),
  ),
  /** The user's IANA time zone: what "now" means to the time tools (a device uses its owner's). */
  timeZone: v.nullish(
    v.pipe(
      v.string("timeZone must be a string"),
      v.trim(),
      v.check(isTimeZone, "timeZone must be an IANA time zone name such as Europe/Paris or America/New_York"),
    ),
  ),
  /** Tools the user turned off: an MCP server's name (all its tools) or a tool's full name. */
  toolsOff: v.nullish(
    v.pipe(
      v.array(
        v.pipe(v.string("toolsOff must hold names"), v.regex(/^[\w-]{1,64}$/, "toolsOff must hold tool or server names")),
        "toolsOff must be an array of tool or server names",
      ),
      v.maxLength(100, "toolsOff must hold at most 100 names"),
    ),
  ),
});
export const SettingsSchema = v.object({
  systemPrompt: v.optional(v.string()),
  deviceSystemPrompt: v.optional(v.string()),
  temperature: v.optional(v.number()),
  model: v.optional(v.string()),
  timeZone: v.optional(v.string()),
  toolsOff: v.optional(v.array(v.string())),
});
export type Settings = v.InferOutput<typeof SettingsSchema>;
export type SettingsPatch = v.InferOutput<typeof SettingsPatchSchema>;

/** A user's settings (each user has their own; the legacy API_TOKEN user's are the pre-users global ones). */
export async function getSettingsOf(store: Store, owner: string): Promise<Settings> {
  const raw = await store.getSettings(owner);
  if (!raw) return {};
  // The settings cache answers with the same object until it changes: checked once, not on every read.
  let checked = parsed.get(raw);
  if (!checked) {
    const stored = v.safeParse(SettingsSchema, raw);
    checked = stored.success ? stored.output : {};
    parsed.set(raw, checked);
  }
  return checked;
}
const parsed = new WeakMap<object, Settings>();

/** One atomic store call: two updates of different keys racing (two tabs, two replicas) keep both. */
export async function updateSettingsOf(store: Store, owner: string, patch: SettingsPatch): Promise<Settings> {
  const stored = v.safeParse(SettingsSchema, await store.patchSettings(owner, patch));
  return stored.success ? stored.output : {};
}
