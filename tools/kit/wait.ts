/** Waiting: for a time, for a condition to hold, and for progress (a stall watchdog). */

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` every `step` ms until it holds or `ms` have passed; resolves with whether it holds. */
export async function waitFor(cond: () => boolean, ms: number, step = 20): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(step);
  }
  return cond();
}

/** Polls `cond` every `step` ms until it holds; rejects after `ms`, naming `what` it waited for. */
export async function until(cond: () => boolean, ms: number, what: string, step = 10): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(step);
  }
}

/**
 * A stall watchdog: call poke() on progress; when none has come for `ms`,
 * onStall() runs (once a check, every 250 ms, until stop()). It does not keep
 * the process alive.
 */
export function watchdog(ms: number, onStall: () => void): { poke(): void; stop(): void } {
  let last = Date.now();
  const timer = setInterval(() => {
    if (Date.now() - last > ms) onStall();
  }, 250);
  timer.unref();
  return {
    poke: () => {
      last = Date.now();
    },
    stop: () => clearInterval(timer),
  };
}
