// Text for a voice: Markdown markup removed so a speaker reads it naturally (headings and list items
// become sentences, code is mentioned, not read symbol by symbol). Plain text passes unchanged.
//
// Prefix-stable while a reply streams: the spoken form of a prefix of the reply is a prefix of the
// spoken form of the whole, up to the last line (which is only finished off, e.g. given a full stop,
// once it ends or `final`). Parts are cut at sentence ends, so a part once sent is never revised.

export const CODE_NOTE = "I've put the code in the app.";

const FENCE = /^\s{0,3}(```|~~~)/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^\s*(?:[-*+]|\d{1,3}[.)])\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const TABLE_SEPARATOR = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const ENDS_SENTENCE = /[.!?…:;。！？]["'”’)\]]*$/;

export function speakable(text: string, final = true): string {
  const lines = text.split("\n");
  const out: string[] = [];
  let inFence = false;
  lines.forEach((line, i) => {
    // The last line is still being written unless the text ends (or ends with a newline).
    const complete = final || i < lines.length - 1;
    if (FENCE.test(line)) {
      if (!inFence) out.push(CODE_NOTE);
      inFence = !inFence;
      return;
    }
    if (inFence) return;
    if (RULE.test(line) && complete) return;
    const heading = HEADING.exec(line);
    if (heading) return void out.push(sentence(inline(heading[1]!), complete));
    const item = ITEM.exec(line);
    if (item) return void out.push(sentence(inline(item[1]!), complete));
    const quote = QUOTE.exec(line);
    if (quote) return void out.push(inline(quote[1]!));
    if (/^\s*\|/.test(line)) {
      if (TABLE_SEPARATOR.test(line)) return;
      const cells = line
        .split("|")
        .map((c) => inline(c.trim()))
        .filter((c) => c !== "");
      return void out.push(sentence(cells.join(", "), complete));
    }
    out.push(inline(line));
  });
  return out.join("\n");
}

/** A heading or list item read as a sentence of its own, once its line is complete. */
function sentence(s: string, complete: boolean): string {
  const t = s.trimEnd();
  return complete && t !== "" && !ENDS_SENTENCE.test(t) ? `${t}.` : s;
}

function inline(s: string): string {
  return (
    s
      // Images and links: their words, not their addresses.
      .replace(/!\[([^\]]*)\]\([^)]*\)/g, "$1")
      .replace(/\[([^\]]+)\]\([^)]*\)/g, "$1")
      // Strong, strike-through and code spans: the markers go, the words stay.
      .replace(/\*\*|__|~~|`+/g, "")
      // Emphasis markers at a word's edge (not the `*` of "2 * 3" or a snake_case name).
      .replace(/(^|[\s(["'])[*_]+(?=[^\s*_])/g, "$1")
      .replace(/([^\s*_])[*_]+(?=$|[\s.,;:!?)\]"'])/g, "$1")
  );
}
