/**
 * The daemon inside a real Postfix as a Milter: deploy/postfix/main.cf.milter as operators copy
 * it, the real daemon with --milter-listen, swaks as the sending MTA; the same scenarios as the
 * policy variant (test/support/postfix-scenarios.ts), refused at MAIL FROM instead of RCPT TO.
 */
import { describePostfixScenarios } from '../../support/postfix-scenarios.js';

describePostfixScenarios('milter');
