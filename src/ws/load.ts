/** Sockets open now: in the whole process, and from one peer address (the upgrade caps read it). */
export type ConnectionLoad = { total(): number; from(address: string): number };

/** Open sockets counted per peer address, for the per-address cap at upgrade (src/app.ts). */
export function connectionLoad(total: () => number) {
  const perAddress = new Map<string, number>();
  return {
    opened(address: string) {
      perAddress.set(address, (perAddress.get(address) ?? 0) + 1);
    },
    closed(address: string) {
      const n = (perAddress.get(address) ?? 1) - 1;
      if (n > 0) perAddress.set(address, n);
      else perAddress.delete(address);
    },
    load: { total, from: (address: string) => perAddress.get(address) ?? 0 } satisfies ConnectionLoad,
  };
}
