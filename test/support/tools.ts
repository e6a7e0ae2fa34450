/** System tools for tests: skip when absent, except under CI=true where absence is a failure. */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';

function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not in this directory
    }
  }
  return null;
}

/** The tool's path, or null after skipping the test (throws instead when CI=true). */
export function toolOrSkip(t: TestContext, name: string): string | null {
  const path = which(name);
  if (path !== null) return path;
  const why = `${name} is not installed (apt-get install it to run this test)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  t.skip(why);
  return null;
}
