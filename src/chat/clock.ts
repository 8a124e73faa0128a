// Timestamps that never repeat or go backwards within a process, so a reply stored right after
// its question always sorts after it even when both land in the same millisecond.
let last = 0;

export function nowMs(): number {
  const t = Math.max(Date.now(), last + 1);
  last = t;
  return t;
}

export const nowIso = (): string => new Date(nowMs()).toISOString();
