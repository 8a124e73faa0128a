import type { ToolCall } from "./model";

/** One `choices[0].delta.tool_calls[]` entry of a streamed chunk, as Azure OpenAI and OpenAI send it. */
export type ToolCallDelta = { index?: number; id?: string; type?: string; function?: { name?: string; arguments?: string } };

/**
 * Puts streamed tool calls back together. The first delta of a call carries its `index`, `id` and
 * name; later ones carry the same `index` and the next piece of the arguments' JSON text. Several
 * calls in one round have indexes 0, 1, ... and their pieces may interleave.
 */
export function toolCallAssembler() {
  const byIndex = new Map<number, ToolCall>();
  let last = -1;
  return {
    add(d: ToolCallDelta) {
      // A server that leaves out `index` (one call at a time) continues the last call unless a new id starts one.
      const index =
        typeof d.index === "number"
          ? d.index
          : d.id && byIndex.get(last)?.id && byIndex.get(last)?.id !== d.id
            ? last + 1
            : Math.max(last, 0);
      last = index;
      let call = byIndex.get(index);
      if (!call) byIndex.set(index, (call = { id: "", name: "", arguments: "" }));
      if (d.id) call.id = d.id;
      const name = d.function?.name;
      // The name comes whole in the first delta; a server that repeats it does not double it.
      if (name && call.name !== name) call.name += name;
      if (d.function?.arguments) call.arguments += d.function.arguments;
    },
    /** The calls in index order; a call with no id gets one (some compatible servers send none). */
    calls(): ToolCall[] {
      return [...byIndex.entries()]
        .sort(([a], [b]) => a - b)
        .filter(([, c]) => c.name)
        .map(([i, c]) => ({ ...c, id: c.id || `call_${i}` }));
    },
  };
}
