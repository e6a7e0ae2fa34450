/**
 * The policy-delegation scenarios again, over a unix socket inside a chrooted smtpd's jail:
 * check_policy_service unix:private/mssante-policyd, the daemon listening on
 * <queue_directory>/private/mssante-policyd with --socket-group postfix (mode 0660) — the layout of
 * deploy/systemd/postfix-socket/ and of the README's chrooted-Postfix recipe. The stop/restart
 * scenario also shows the restarted daemon taking its socket path back.
 */
import { describePostfixScenarios } from '../../support/postfix-scenarios.js';

describePostfixScenarios('policy', { unixSocketInChroot: true });
