# --- running-daemon.sh (inlined by scripts/package-deb.sh at the #RUNNING_DAEMON# line) ---
# Without systemd nothing stops or restarts the daemon for dpkg: a supervisor (runit, s6,
# supervisord), a container or an operator started it, and only they can. These find such a daemon
# (a "serve" of this package's code, however it was started) and say so, naming its pid.
mssante_running_pids() {
  pids=""
  for dir in /proc/[0-9]*; do
    # A process may end between the glob and the read: then it is simply not running.
    cmd=$({ tr '\000' ' ' <"$dir/cmdline"; } 2>/dev/null) || continue
    case "$cmd" in
      *"/usr/lib/mssante-policyd/dist/cli.js serve"*) pids="$pids${pids:+ }${dir#/proc/}" ;;
    esac
  done
  echo "$pids"
}

# $1: what happened to the package; $2: what the operator must do with the running daemon.
mssante_tell_running() {
  [ -d /run/systemd/system ] && return 0
  pids=$(mssante_running_pids)
  [ -n "$pids" ] || return 0
  echo "mssante-policyd: $1, and no systemd runs here: the daemon running as pid $pids was left running." >&2
  echo "mssante-policyd: $2" >&2
}
# --- end of running-daemon.sh ---
