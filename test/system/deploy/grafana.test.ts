/**
 * The Grafana dashboard works both ways an operator loads it: provisioned from a folder (no import
 * step, so every `${DS_…}` must be a variable the dashboard defines) and imported in the UI (the
 * `__inputs` entry fills the same name). deploy/grafana/dashboards.yaml points where the package
 * installs the dashboard (test/system/deploy/deb.test.ts checks the installed file).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../../support/fixtures.js';

const DASHBOARD_TEXT = readFileSync(join(REPO_ROOT, 'grafana', 'mssante-policyd.json'), 'utf8');

interface Variable {
  readonly name: string;
  readonly type: string;
  readonly query?: unknown;
  readonly datasource?: { readonly uid?: string };
}
interface Dashboard {
  readonly __inputs?: ReadonlyArray<{ readonly name: string; readonly type: string; readonly pluginId: string }>;
  readonly templating: { readonly list: readonly Variable[] };
}

/** Every variable reference in the dashboard's strings: `$x`, `${x}`, `${x:format}`, `[[x]]`. */
function references(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z0-9_]+)\]\]/g)) {
    out.add((m[1] ?? m[2] ?? m[3])!);
  }
  return out;
}

/** The unresolved references once Grafana has substituted what it knows (variables and its own `__` names). */
function unresolved(text: string): string[] {
  const dashboard = JSON.parse(text) as Dashboard;
  const defined = new Set(dashboard.templating.list.map((v) => v.name));
  return [...references(text)].filter((name) => !defined.has(name) && !name.startsWith('__'));
}

describe('grafana/mssante-policyd.json', () => {
  it('provisioned from a folder: every ${DS_…} (and every other reference) is a variable the dashboard defines', () => {
    const dashboard = JSON.parse(DASHBOARD_TEXT) as Dashboard;
    assert.ok(references(DASHBOARD_TEXT).has('DS_PROMETHEUS'), 'the panels use the data source variable');
    assert.deepEqual(unresolved(DASHBOARD_TEXT), []);
    const ds = dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS');
    assert.equal(ds?.type, 'datasource');
    assert.equal(ds?.query, 'prometheus');
    // Defined before the query variables that read through it.
    assert.equal(dashboard.templating.list[0]?.name, 'DS_PROMETHEUS');
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      assert.equal(v.datasource?.uid, '${DS_PROMETHEUS}', `${v.name} reads through the chosen data source`);
    }
  });

  it('imported in the UI: the DS_PROMETHEUS input is still declared, and once Grafana substitutes it nothing is left unresolved', () => {
    const dashboard = JSON.parse(DASHBOARD_TEXT) as Dashboard;
    assert.deepEqual(
      (dashboard.__inputs ?? []).map((i) => [i.name, i.type, i.pluginId]),
      [['DS_PROMETHEUS', 'datasource', 'prometheus']],
    );
    // What the import does: every ${DS_PROMETHEUS} becomes the chosen data source's uid.
    const imported = DASHBOARD_TEXT.replaceAll('${DS_PROMETHEUS}', 'P1809F7CD0C75ACF3');
    assert.doesNotMatch(imported, /\$\{DS_/);
    assert.deepEqual(unresolved(imported), []);
  });

  it('the provisioning file loads the folder the Debian package installs the dashboard in', () => {
    const yaml = readFileSync(join(REPO_ROOT, 'deploy', 'grafana', 'dashboards.yaml'), 'utf8');
    assert.match(yaml, /^apiVersion: 1$/m);
    assert.match(yaml, /^ {4}type: file$/m);
    const path = /^ {6}path: (\S+)$/m.exec(yaml)?.[1];
    assert.equal(path, '/usr/share/mssante-policyd/grafana');
    const script = readFileSync(join(REPO_ROOT, 'scripts', 'package-deb.sh'), 'utf8');
    assert.match(script, /grafana\/mssante-policyd\.json "\$ROOT\/usr\/share\/\$NAME\/grafana\/"/);
  });
});
