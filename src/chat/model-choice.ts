import type { Model } from "../model/model";
import { ChatError } from "./errors";
import type { SettingsPatch } from "./settings";

// Which model a user may pick (MODEL_ALLOWED; by default only the configured one): one setting must
// not multiply what each call costs.

/** The names a user may choose: MODEL_ALLOWED, or the configured model alone. */
export const allowedModels = (configured: string, allowed: readonly string[] = []) => (allowed.length > 0 ? [...allowed] : [configured]);

/** INVALID_ARGUMENT naming the allowed models when an update picks another one. */
export function checkModelChoice(patch: SettingsPatch, allowed: readonly string[]) {
  if (patch.model && !allowed.includes(patch.model))
    throw new ChatError("INVALID_ARGUMENT", `model must be one of: ${allowed.join(", ")}`, { allowed: [...allowed] });
}

/** The model, where a call naming a model outside the list (a setting stored before the list changed) uses the configured one. */
export function onlyAllowed(model: Model, allowed: readonly string[]): Model {
  return {
    kind: model.kind,
    name: model.name,
    stream: (turns, o) => model.stream(turns, o.model === undefined || allowed.includes(o.model) ? o : { ...o, model: undefined }),
  };
}
