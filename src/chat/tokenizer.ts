import { boundedMap } from "../bounded";

// Counting tokens with the model family's own tokenizer (gpt-tokenizer, pure JS: o200k_base and
// cl100k_base are OpenAI's published encodings, so counts match what the API bills), loaded once
// per encoding on first use (src/chat/warm-up.ts loads the server model's at start-up). Linear in
// the text's length whatever it holds.

export type Encoding = "o200k_base" | "cl100k_base";

export type Tokenizer = { readonly encoding: Encoding; count(text: string): number };

// OpenAI's chat format: each message costs 3 tokens (<|im_start|>, <|im_sep|>/newline, <|im_end|>)
// plus its role name (1 token), and every reply is primed with 3 more (<|im_start|>assistant<|im_sep|>).
// This is the cookbook's count, and gpt-tokenizer's encodeChat gives the same for gpt-4o.
export const TOKENS_PER_MESSAGE = 4;
export const REPLY_PRIMING_TOKENS = 3;

/**
 * The encoding of a model or deployment name. o200k_base is OpenAI's current encoding (GPT-4o,
 * GPT-4.1, GPT-4.5, o1/o3/o4, GPT-5); cl100k_base is GPT-4 and GPT-3.5's. Any other name (an
 * Azure deployment called "chat", a local Llama, Mistral or Qwen) gets o200k_base as an
 * approximation: those models' own tokenizers differ, typically by 10-20%, so keep
 * MODEL_CONTEXT_TOKENS below their real window.
 */
export function encodingFor(model: string): Encoding {
  let e = encodings.get(model);
  if (!e) {
    if (encodings.size >= 1_000) encodings.clear();
    encodings.set(model, (e = encodingOf(model)));
  }
  return e;
}
// Asked several times per send for the same few model names.
const encodings = new Map<string, Encoding>();

function encodingOf(model: string): Encoding {
  const m = model.toLowerCase().replace(/^.*\//, "");
  if (/^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|gpt-oss)/.test(m)) return "o200k_base";
  if (/^(gpt-4|gpt-35|gpt-3\.5)/.test(m)) return "cl100k_base";
  return "o200k_base";
}

// Longest run of whitespace or of non-whitespace that is handed to the BPE merge in one piece.
// gpt-tokenizer's merge is quadratic in a piece's length: 100,000 emoji in a row (one piece, as no
// regex split falls inside) took minutes, blocking the server. Real tokens are far shorter than
// this, so cutting a longer run changes its count by about one token per cut.
const MAX_RUN = 128;
// A text is counted in slices of about this size, cut between pieces (so slices count the same as
// the whole), which keeps each slice's work bounded.
const SLICE = 8192;
// User text is counted as text: "<|endoftext|>" typed in a message is not a special token to the
// API either, and the tokenizer would otherwise throw on it.
const AS_TEXT = { disallowedSpecial: new Set<string>() };

type Api = { countTokens(text: string, o: typeof AS_TEXT): number; setMergeCacheSize(n: number): void };

async function load(encoding: Encoding): Promise<{ api: Api; split: RegExp }> {
  // Loaded on first use (each encoding's table is 1-2 MB of JS): only what the model needs.
  const { O200K_TOKEN_SPLIT_REGEX, CL100K_TOKEN_SPLIT_REGEX } = await import("gpt-tokenizer/encodingParams/constants");
  const api: Api =
    encoding === "o200k_base" ? await import("gpt-tokenizer/encoding/o200k_base") : await import("gpt-tokenizer/encoding/cl100k_base");
  // The default merge cache keeps 100,000 pieces; a tenth bounds its memory and still hits on common words.
  api.setMergeCacheSize(10_000);
  return { api, split: encoding === "o200k_base" ? O200K_TOKEN_SPLIT_REGEX : CL100K_TOKEN_SPLIT_REGEX };
}

const tokenizers = new Map<Encoding, Promise<Tokenizer>>();

// A send counts its question twice (the window check before it is stored, then the prompt, where it
// has an id): the texts counted last are remembered, short ones only, a bounded number of them
// (at most 2 MB).
const RECENT_TEXTS = 256;
const RECENT_MAX_CHARS = 4096;
function remembering(count: (text: string) => number): (text: string) => number {
  const recent = boundedMap<string, number>(RECENT_TEXTS);
  return (text) => {
    if (text.length > RECENT_MAX_CHARS) return count(text);
    let n = recent.get(text);
    if (n === undefined) {
      n = count(text);
      recent.set(text, n);
    }
    return n;
  };
}

/** The tokenizer of a model's family, loaded once per encoding. */
export function tokenizerFor(model: string): Promise<Tokenizer> {
  const encoding = encodingFor(model);
  let t = tokenizers.get(encoding);
  if (!t) {
    t = load(encoding).then(({ api, split }) => ({ encoding, count: remembering((text: string) => countText(api, split, text)) }));
    t.catch(() => tokenizers.delete(encoding));
    tokenizers.set(encoding, t);
  }
  return t;
}

/** Whether `text` has a run of whitespace or of non-whitespace longer than MAX_RUN (code units). */
function hasLongRun(text: string): boolean {
  let run = 0;
  let space = false;
  for (let i = 0; i < text.length; i++) {
    const s = isSpace(text.charCodeAt(i));
    run = s === space ? run + 1 : 1;
    space = s;
    if (run > MAX_RUN) return true;
  }
  return false;
}

function isSpace(c: number): boolean {
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff ||
    c === 0x85
  );
}

/**
 * Tokens in `text`. Ordinary text (no long runs) is counted exactly as the library does; text with
 * a long run is counted piece by piece, long pieces in MAX_RUN-sized parts (never splitting a
 * surrogate pair), so the work stays linear in the text's length.
 */
function countText(api: Api, split: RegExp, text: string): number {
  if (!text) return 0;
  if (!hasLongRun(text)) return api.countTokens(text, AS_TEXT);
  let total = 0;
  let from = 0; // start of the slice of ordinary pieces not yet counted
  const flush = (to: number) => {
    if (to > from) total += api.countTokens(text.slice(from, to), AS_TEXT);
  };
  for (const m of text.matchAll(new RegExp(split.source, split.flags))) {
    const piece = m[0];
    const at = m.index;
    if (piece.length <= MAX_RUN) {
      if (at + piece.length - from >= SLICE) {
        flush(at + piece.length);
        from = at + piece.length;
      }
      continue;
    }
    flush(at);
    for (let i = 0; i < piece.length; ) {
      let end = Math.min(i + MAX_RUN, piece.length);
      // Keep a surrogate pair whole.
      if (end < piece.length && isHighSurrogate(piece.charCodeAt(end - 1))) end--;
      total += api.countTokens(piece.slice(i, end), AS_TEXT);
      i = end;
    }
    from = at + piece.length;
  }
  flush(text.length);
  return total;
}

const isHighSurrogate = (c: number) => c >= 0xd800 && c <= 0xdbff;
