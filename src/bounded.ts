// Bounded memory for caches: a Map or a Set that holds at most a given weight (one per entry unless
// told otherwise) and forgets its least recently used entries half at a time.
//
// Why not a Map that drops its oldest entry with `map.delete(map.keys().next().value)`: a Map's
// iterator in JavaScriptCore starts at the first slot and walks over every slot a delete has left
// behind until the table is rebuilt, so on a full Map of 10,000 entries each eviction cost ~20 µs,
// growing with the Map: a cost set by whoever fills it (a sweep of addresses, of chat ids).
// Here a full young generation becomes the old one and the previous old one is dropped whole:
// no iteration, O(1) per operation. A hit in the old generation moves the entry to the young one.

export type BoundedMap<K, V> = {
  /** The value, the entry counting as used. */
  get(key: K): V | undefined;
  /** Whether it is held, without counting as a use. */
  has(key: K): boolean;
  /** Sets the entry as most recently used, weighed as it is now. */
  set(key: K, value: V): void;
  delete(key: K): boolean;
  clear(): void;
  /** Entries held. */
  readonly size: number;
  /** Their weight, each as it was when set. */
  readonly weight: number;
};

type BoundedOptions<K, V> = {
  /** What an entry weighs (default 1): the map holds at most `max` in all. */
  weight?: (key: K, value: V) => number;
  /** Told of each entry dropped for room (not of those deleted or replaced). */
  dropped?: (key: K, value: V) => void;
};

type Generation<K, V> = { values: Map<K, V>; weights: Map<K, number> | undefined; weight: number };

export function boundedMap<K, V>(max: number, o: BoundedOptions<K, V> = {}): BoundedMap<K, V> {
  const half = Math.max(1, max / 2);
  const weigh = o.weight;
  const fresh = (): Generation<K, V> => ({ values: new Map(), weights: weigh ? new Map() : undefined, weight: 0 });
  let young = fresh();
  let old = fresh();

  function put(key: K, value: V) {
    const w = weigh ? weigh(key, value) : 1;
    if (young.weight + w > half && young.values.size > 0) {
      if (o.dropped) for (const [k, v] of old.values) o.dropped(k, v);
      old = young;
      young = fresh();
    }
    young.values.set(key, value);
    young.weights?.set(key, w);
    young.weight += w;
  }
  function take(g: Generation<K, V>, key: K): boolean {
    if (!g.values.delete(key)) return false;
    if (g.weights) {
      g.weight -= g.weights.get(key)!;
      g.weights.delete(key);
    } else g.weight--;
    return true;
  }

  return {
    get(key) {
      const v = young.values.get(key);
      if (v !== undefined || young.values.has(key)) return v;
      if (!old.values.has(key)) return undefined;
      const moved = old.values.get(key) as V;
      take(old, key);
      put(key, moved);
      return moved;
    },
    has: (key) => young.values.has(key) || old.values.has(key),
    set(key, value) {
      take(young, key);
      take(old, key);
      put(key, value);
    },
    delete(key) {
      const a = take(young, key);
      const b = take(old, key);
      return a || b;
    },
    clear() {
      young = fresh();
      old = fresh();
    },
    get size() {
      return young.values.size + old.values.size;
    },
    get weight() {
      return young.weight + old.weight;
    },
  };
}

/** A set on the same terms; a key found by `has` counts as used, as a Map's `get` does. */
export function boundedSet<K>(max: number, o: { dropped?: (key: K) => void } = {}) {
  const m = boundedMap<K, true>(max, o);
  return {
    has: (key: K) => m.get(key) === true,
    add: (key: K) => m.set(key, true),
    delete: (key: K) => m.delete(key),
    clear: () => m.clear(),
  };
}
