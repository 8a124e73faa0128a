import { TRANSFER_FORMAT, TRANSFER_VERSION, type ChatExport, type ExportedMessage } from "./transfer";

// An export as text, produced piece by piece as its pages are read (docs/protocol.md, "Export and import").

/**
 * The JSON file: exactly `JSON.stringify` of the whole document plus a newline, with keys in a
 * fixed order, written without ever holding more than one page of messages.
 */
export async function* jsonExport(e: ChatExport): AsyncGenerator<string> {
  const whole = JSON.stringify({
    format: TRANSFER_FORMAT,
    version: TRANSFER_VERSION,
    exported_at: e.exportedAt,
    chat: e.chat,
    messages: [],
  });
  yield whole.slice(0, -"]}".length);
  let first = true;
  for await (const page of e.pages) {
    if (page.length === 0) continue;
    yield (first ? "" : ",") + page.map((m) => JSON.stringify(m)).join(",");
    first = false;
  }
  yield "]}\n";
}

const ROLE = { user: "User", assistant: "Assistant", system: "System" } as const;
const STATUS = { incomplete: "incomplete", stopped: "stopped", interrupted: "interrupted", streaming: "still streaming" } as const;

/** A heading is one line: any line break in a name becomes a space. */
const oneLine = (s: string) => s.replace(/[\r\n\u2028\u2029]+/g, " ").trim();

/**
 * A readable document: the chat's name as the title, then each message under a heading with its
 * role, device, time and (cut short) status, its content exactly as stored. A message that leaves a
 * code fence open (a reply stopped mid-block) gets the closing fence after it, so the rest of the
 * document is not swallowed into its code block.
 */
export async function* markdownExport(e: ChatExport): AsyncGenerator<string> {
  yield `# ${oneLine(e.chat.name) || "Untitled chat"}\n\nExported from PiChat on ${e.exportedAt}. Chat created ${e.chat.created_at}.\n\n`;
  for await (const page of e.pages) {
    if (page.length > 0) yield page.map(markdownMessage).join("");
  }
}

export function markdownMessage(m: ExportedMessage): string {
  const who = m.device_id !== undefined ? `${ROLE[m.role]} (${oneLine(m.device_id)})` : ROLE[m.role];
  const rated = m.feedback ? [m.feedback.rating === "up" ? "rated 👍" : "rated 👎"] : [];
  const heading = [who, m.created_at, ...(m.status ? [STATUS[m.status]] : []), ...rated].join(" · ");
  const fence = openFence(m.content);
  const close = fence ? `${/[\r\n]$/.test(m.content) ? "" : "\n"}${fence}` : "";
  const comment = m.feedback?.comment ? `> Feedback: ${oneLine(m.feedback.comment)}\n\n` : "";
  return `## ${heading}\n\n${toolCallsMarkdown(m)}${m.content}${close}\n\n${comment}`;
}

/** A reply's tool calls, before its text (they ran before it was written): one quoted line each. */
function toolCallsMarkdown(m: ExportedMessage): string {
  if (!m.tool_calls?.length) return "";
  const code = (s: string) => {
    const text = oneLine(s);
    const ticks = "`".repeat(Math.max(0, ...(text.match(/`+/g) ?? []).map((r) => r.length)) + 1);
    return `${ticks}${ticks.length > 1 ? " " : ""}${text}${ticks.length > 1 ? " " : ""}${ticks}`;
  };
  const lines = m.tool_calls.map((c) => {
    const outcome = c.ok ? "ok" : `error: ${c.error ?? "failed"}`;
    return `> Tool ${code(c.name)} (${outcome}, ${c.ms} ms): ${code(c.arguments || "{}")} → ${code(c.result.slice(0, 500))}\n`;
  });
  return `${lines.join(">\n")}\n`;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;

/** The fence (``` or ~~~ run) a Markdown text leaves open at its end, as CommonMark reads fences. */
export function openFence(text: string): string | undefined {
  let open: string | undefined;
  for (const line of text.split(/\r\n|\r|\n/)) {
    const m = FENCE.exec(line);
    if (!m) continue;
    const [, run, rest] = m as unknown as [string, string, string];
    if (open === undefined) {
      if (!(run[0] === "`" && rest.includes("`"))) open = run; // a backtick info string cannot hold a backtick
    } else if (run[0] === open[0] && run.length >= open.length && rest.trim() === "") {
      open = undefined;
    }
  }
  return open;
}
