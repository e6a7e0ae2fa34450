/**
 * The log level, changeable while running (SIGHUP, `log-level` is live). pino's child loggers copy
 * their parent's level when made and never look again, so every child is remembered (weakly: the
 * per-request children of the HTTP side come and go) and set along with the root.
 */
import type { Logger } from 'pino';

export class LogLevelControl {
  private readonly children = new Set<WeakRef<Logger>>();
  private readonly finalizer = new FinalizationRegistry<WeakRef<Logger>>((ref) => this.children.delete(ref));

  /** pino's `onChild` option: called for every child (and grandchild) logger made. */
  readonly onChild = (child: Logger): void => {
    const ref = new WeakRef(child);
    this.children.add(ref);
    this.finalizer.register(child, ref);
  };

  set(root: Logger, level: string): void {
    root.level = level;
    for (const ref of this.children) {
      const child = ref.deref();
      if (child === undefined) this.children.delete(ref);
      else child.level = level;
    }
  }
}
