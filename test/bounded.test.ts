import { describe, expect, test } from "bun:test";
import { boundedMap, boundedSet } from "../src/bounded";

describe("bounded caches", () => {
  test("never hold more than max entries, however many are set", () => {
    const m = boundedMap<number, number>(100);
    for (let i = 0; i < 10_000; i++) {
      m.set(i, i);
      expect(m.size).toBeLessThanOrEqual(100);
    }
    // The newest half at least is still there.
    for (let i = 10_000 - 50; i < 10_000; i++) expect(m.get(i)).toBe(i);
    expect(m.get(0)).toBeUndefined();
  });

  test("an entry read now and then is kept while others come and go (least recently used go first)", () => {
    const m = boundedMap<string, number>(10);
    m.set("hot", 1);
    for (let i = 0; i < 1_000; i++) {
      m.set(`k${i}`, i);
      expect(m.get("hot")).toBe(1);
    }
    expect(m.has("k0")).toBe(false);
  });

  test("a set's has counts as a use: a member asked about now and then is kept while others come and go", async () => {
    const s = boundedSet<string>(10);
    s.add("hot");
    for (let i = 0; i < 1_000; i++) {
      s.add(`k${i}`);
      expect(s.has("hot")).toBe(true);
    }
    expect(s.has("k0")).toBe(false);
  });

  test("weighed: the weights held stay within max; setting a key again weighs it again; deleting frees its weight", () => {
    const m = boundedMap<string, string>(1_000, { weight: (_, v) => v.length });
    for (let i = 0; i < 500; i++) {
      m.set(`k${i}`, "x".repeat(1 + (i % 97)));
      expect(m.weight).toBeLessThanOrEqual(1_000);
    }
    m.clear();
    m.set("a", "x".repeat(100));
    m.set("a", "x".repeat(10));
    expect(m.weight).toBe(10);
    expect(m.delete("a")).toBe(true);
    expect(m.delete("a")).toBe(false);
    expect([m.weight, m.size]).toEqual([0, 0]);
  });

  test("dropped hears of each entry forgotten for room, not of those deleted or still held", () => {
    const dropped: number[] = [];
    const s = boundedSet<number>(10, { dropped: (k) => dropped.push(k) });
    for (let i = 0; i < 100; i++) {
      s.add(i);
      if (i % 7 === 0) s.delete(i);
    }
    expect(dropped.length).toBeGreaterThan(0);
    for (const k of dropped) {
      expect(k % 7).not.toBe(0);
      expect(s.has(k)).toBe(false);
    }
    // Every key ever added is now either held, deleted or reported dropped: nothing vanishes unreported.
    for (let i = 0; i < 100; i++) expect(s.has(i) || i % 7 === 0 || dropped.includes(i)).toBe(true);
  });
});
