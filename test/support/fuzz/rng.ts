// Seeded randomness: the same seed gives the same frames everywhere, so a failing run is reproduced by its seed.

/** mulberry32: a tiny 32-bit PRNG; the same seed gives the same sequence everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float = () => this.next();
  /** Whole number in [min, max]. */
  int = (min: number, max: number) => min + Math.floor(this.next() * (max - min + 1));
  chance = (p: number) => this.next() < p;
  pick = <T>(xs: readonly T[]): T => xs[Math.floor(this.next() * xs.length)]!;
  weighted<T>(entries: readonly (readonly [number, T])[]): T {
    const total = entries.reduce((s, [w]) => s + w, 0);
    let r = this.next() * total;
    for (const [w, x] of entries) if ((r -= w) < 0) return x;
    return entries.at(-1)![1];
  }
  /** A v4-shaped UUID from this generator (crypto.randomUUID is not seeded). */
  uuid(): string {
    const h = (n: number) => Array.from({ length: n }, () => this.int(0, 15).toString(16)).join("");
    return `${h(8)}-${h(4)}-4${h(3)}-${this.pick(["8", "9", "a", "b"])}${h(3)}-${h(12)}`;
  }
  bytes(n: number): Uint8Array<ArrayBuffer> {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(0, 255);
    return b;
  }
  ascii(n: number, alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"): string {
    let s = "";
    for (let i = 0; i < n; i++) s += alphabet[this.int(0, alphabet.length - 1)];
    return s;
  }
  /** Random code points from awkward ranges; lone surrogates only when asked. */
  unicode(n: number, o: { lone?: boolean } = {}): string {
    const ranges: [number, number][] = [
      [0x20, 0x7e],
      [0x00, 0x1f],
      [0x7f, 0x9f],
      [0xa0, 0x24f],
      [0x300, 0x36f],
      [0x590, 0x6ff],
      [0x900, 0x97f],
      [0x4e00, 0x9fff],
      [0xac00, 0xd7a3],
      [0x200b, 0x200f],
      [0x2028, 0x202e],
      [0x2066, 0x2069],
      [0x3000, 0x3000],
      [0xfeff, 0xfeff],
      [0xfffd, 0xffff],
      [0x1f300, 0x1faff],
      [0x10000, 0x1007f],
      [0xe0000, 0xe007f],
      [0x10fff0, 0x10ffff],
      [0x22, 0x22],
      [0x5c, 0x5c],
    ];
    let s = "";
    for (let i = 0; i < n; i++) {
      if (o.lone && this.chance(0.05)) s += String.fromCharCode(this.int(0xd800, 0xdfff));
      else {
        const [lo, hi] = this.pick(ranges);
        s += String.fromCodePoint(this.int(lo, hi));
      }
    }
    return s;
  }
}
