import { describe, expect, test } from "bun:test";
import { finalPieces, fitCut, jsonBytes, nextCut, RESPONSE_MAX_BYTES, sentenceEnds } from "../src/devices/parts";
import { CODE_NOTE, speakable } from "../src/devices/speech";

// Pure logic of what a device hears: Markdown read aloud, and where a reply is cut into parts.

describe("speakable", () => {
  test("plain text passes unchanged, whatever its script", () => {
    for (const t of ["It is sunny today.", "東京の空は晴れています。", "2 * 3 = 6, snake_case_name and 3.14.", "Ça va 😊!\nNext line."]) {
      expect(speakable(t)).toBe(t);
    }
  });

  test("headings and list items become sentences, code is mentioned, links read as their words", () => {
    expect(speakable("# Title\n- one\n- two!\n1. three")).toBe("Title.\none.\ntwo!\nthree.");
    expect(speakable("Run this:\n```sh\nrm -rf /tmp/x\n```\nDone.")).toBe(`Run this:\n${CODE_NOTE}\nDone.`);
    expect(speakable("A **bold** and *em* and `code` and [link](http://x) and ![pic](p.png).")).toBe(
      "A bold and em and code and link and pic.",
    );
    expect(speakable("| a | b |\n|---|---|\n| 1 | 2 |")).toBe("a, b.\n1, 2.");
  });

  test("prefix-stable at every sentence end: what was sent from a prefix is never revised", () => {
    const md = "## Plan\n\nFirst, **open** the door. Then say `hi`.\n- Item one. Item two\n```\ncode\n```\nBye now. The end.";
    const whole = speakable(md, true);
    for (let i = 1; i <= md.length; i++) {
      const spoken = speakable(md.slice(0, i), false);
      for (const end of sentenceEnds(spoken)) expect(whole.startsWith(spoken.slice(0, end))).toBe(true);
    }
  });
});

describe("parts", () => {
  test("the first part is the first sentence; later ones wait to grow", () => {
    expect(nextCut("Hello there", 0, 0, 0)).toBeUndefined();
    // A word's full stop at the end is enough for the first part; a number's is not.
    expect(nextCut("Hello there.", 0, 0, 0)).toBe("Hello there.".length);
    expect(nextCut("It costs 3.", 0, 0, 0)).toBeUndefined();
    expect(nextCut("Hello there. How", 0, 0, 0)).toBe("Hello there.".length);
    expect(nextCut("東京は晴れ。次", 0, 0, 0)).toBe("東京は晴れ。".length);
    // Without a sentence end: at a word, once long or slow enough.
    expect(nextCut("words words words", 0, 0, 2_000)).toBe("words words".length);
    const s = "A. " + "Some more words here. ".repeat(5);
    expect(nextCut(s, 2, 1, 0)).toBeUndefined();
    const longer = "A. " + "Some more words here. ".repeat(12);
    expect(nextCut(longer, 2, 1, 0)).toBeGreaterThan(200);
  });

  test("no piece is over the byte limit, none splits a surrogate pair, and joined they are the text", () => {
    const text = "😊 emoji and words. ".repeat(9000);
    const pieces = finalPieces(text, 0);
    expect(pieces.length).toBeGreaterThan(1);
    for (const p of pieces) {
      expect(jsonBytes(p)).toBeLessThanOrEqual(RESPONSE_MAX_BYTES);
      expect(p.isWellFormed()).toBe(true);
    }
    expect(pieces.join("")).toBe(text);
    const noSpaces = "😊".repeat(40_000);
    const cut = fitCut(noSpaces, 0)!;
    expect(noSpaces.slice(0, cut).isWellFormed()).toBe(true);
  });
});
