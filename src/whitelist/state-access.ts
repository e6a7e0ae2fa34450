/**
 * Who may write the state dir. Its list is verified at start-up (stored-list.ts), but the directory
 * also holds the accepted-lists file (check --accept lets a list through the guard) and the
 * pseudonymisation key: whoever can write there can still replay an older genuine list or unmask
 * pseudonyms. `serve` therefore refuses a state dir, or a file in it, that is not owned by the
 * daemon's user (or root, which writes accept-sha256 with check --accept), or that group or
 * others may write, and a symbolic link inside it.
 */
import { lstatSync, readdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';

const GROUP_OR_OTHER_WRITE = 0o022;
/** The sticky bit: in /tmp (1777) only an entry's owner may rename or remove it. */
const STICKY = 0o1000;

function problemOf(path: string, st: Stats, uid: number, what: string): string | null {
  if (st.uid !== uid && st.uid !== 0)
    return `${what} ${path} is owned by uid ${st.uid}, not by the daemon's user (uid ${uid}) or root: chown ${uid} ${path}`;
  if ((st.mode & GROUP_OR_OTHER_WRITE) !== 0)
    return `${what} ${path} has mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}, writable by ${
      (st.mode & 0o020) !== 0 ? 'its group' : 'others'
    }: chmod go-w ${path}`;
  return null;
}

/**
 * Whoever may write a directory above the state dir may rename the state dir away and put their own
 * in its place, so every ancestor of its real path must be owned by root or the daemon's user and not
 * writable by group or others — unless sticky (/tmp), where only the owner of an entry may move it.
 */
function ancestorProblems(realDir: string, uid: number): string[] {
  const problems: string[] = [];
  for (let dir = dirname(realDir); ; dir = dirname(dir)) {
    const st = statSync(dir);
    if (st.uid !== uid && st.uid !== 0)
      problems.push(
        `directory ${dir} above the state dir is owned by uid ${st.uid}, not by the daemon's user (uid ${uid}) or root: its owner could replace the state dir`,
      );
    else if ((st.mode & GROUP_OR_OTHER_WRITE) !== 0 && (st.mode & STICKY) === 0)
      problems.push(
        `directory ${dir} above the state dir has mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}: whoever may write it could replace the state dir; chmod go-w ${dir} (or +t)`,
      );
    if (dir === dirname(dir)) return problems;
  }
}

/**
 * Every reason the state dir is not the daemon's alone (empty: fine). The directory itself may be a
 * symbolic link (systemd's DynamicUser= links /var/lib/NAME to /var/lib/private/NAME); its entries
 * may not.
 */
export function stateDirProblems(dir: string, uid: number): string[] {
  const problems: string[] = [];
  const st = statSync(dir);
  if (!st.isDirectory()) return [`state dir ${dir} is not a directory`];
  const own = problemOf(dir, st, uid, 'state dir');
  if (own !== null) problems.push(own);
  problems.push(...ancestorProblems(realpathSync(dir), uid));
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    let entry: Stats;
    try {
      entry = lstatSync(path);
    } catch {
      continue; // removed meanwhile (a temp file)
    }
    if (entry.isSymbolicLink()) {
      problems.push(`state file ${path} is a symbolic link: the state dir holds regular files only`);
      continue;
    }
    const problem = problemOf(path, entry, uid, entry.isDirectory() ? 'directory' : 'state file');
    if (problem !== null) problems.push(problem);
  }
  return problems;
}

/** Throws with every problem found, so that `serve` exits 1 with the fix in its message. */
export function assertStateDirPrivate(dir: string, uid: number | undefined = process.getuid?.()): void {
  if (uid === undefined) return; // not a POSIX host: no owner to compare
  const problems = stateDirProblems(dir, uid);
  if (problems.length > 0)
    throw new Error(
      `refusing the state dir: whoever else can write it could put a list, an accepted hash or a key there; ${problems.join('; ')}`,
    );
}
