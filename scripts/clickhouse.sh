#!/usr/bin/env bash
# A throwaway ClickHouse for development and CI: Debian's clickhouse-server
# (18.16) run as a plain process on loopback ports, its data in a directory of
# its own. No Docker, no systemd, nothing outside that directory.
#
#   scripts/clickhouse.sh install          install clickhouse-server with apt-get when missing
#   scripts/clickhouse.sh start            start a server (installs first when missing), wait until it answers
#   scripts/clickhouse.sh stop             stop the server started in CLICKHOUSE_DIR and wait for it to exit
#   scripts/clickhouse.sh status           exit 0 and print the address when the server answers
#   scripts/clickhouse.sh run -- CMD...    start a fresh server in a temporary directory, run CMD with
#                                          FEEDMETER_CLICKHOUSE=127.0.0.1:PORT, stop the server, exit with CMD's status
#
# Environment (defaults in brackets):
#   CLICKHOUSE_DIR        data, config, logs and pid file [/tmp/feedmeter-clickhouse]; `run` uses a new temp dir
#   CLICKHOUSE_TCP_PORT   native protocol port on 127.0.0.1 [9000; `run`: 19000]
#   CLICKHOUSE_HTTP_PORT  HTTP port on 127.0.0.1, used for /ping [8123; `run`: 18123]
#   CLICKHOUSE_SERVER     the server binary [clickhouse-server on PATH, or /usr/sbin/clickhouse-server]
#   CI                    when "true", `run` fails if no server can be installed and started;
#                         otherwise it runs CMD without one (tests that need ClickHouse then skip)
#
# The generated users.xml has two users, both loopback only and without a
# password: `default` (read-write, used by feedmeter and the tests) and
# `analyst` (readonly=2: SELECT and SET only), the read-only user for the
# analyst views.
set -euo pipefail

die() { echo "clickhouse.sh: $*" >&2; exit 1; }

server_bin() {
	if [[ -n "${CLICKHOUSE_SERVER:-}" ]]; then echo "$CLICKHOUSE_SERVER"; return; fi
	command -v clickhouse-server 2>/dev/null && return
	[[ -x /usr/sbin/clickhouse-server ]] && { echo /usr/sbin/clickhouse-server; return; }
	return 1
}

cmd_install() {
	if server_bin >/dev/null; then return 0; fi
	[[ "$(id -u)" == 0 ]] || die "clickhouse-server is not installed; run as root: apt-get update && apt-get install -y clickhouse-server"
	echo "clickhouse.sh: installing clickhouse-server with apt-get" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	# The package's postinst tries to start the system service; policy-rc.d
	# or the lack of systemd stops that, and we never use that instance.
	apt-get install -y -qq clickhouse-server >&2
	server_bin >/dev/null || die "clickhouse-server still missing after apt-get install"
}

# ping succeeds when the HTTP port answers "Ok." to GET /ping.
ping() {
	local port=$1 reply
	reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && timeout 2 cat <&3) 2>/dev/null) || return 1
	[[ "$reply" == *"Ok."* ]]
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
	local dir=$1 tcp=$2 http=$3
	mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
	cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.sh: a loopback-only server for development and tests. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$tcp</tcp_port>
    <http_port>$http</http_port>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <!-- ClickHouse's own default (8 GiB, a bound, not an allocation): the
         query service reads with use_uncompressed_cache = 1, and a cache
         smaller than the rollups it reads thrashes (measured: 256 MiB against
         the benchmark's 515 MiB of daily rollups). -->
    <uncompressed_cache_size>8589934592</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <umask>022</umask>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <!-- No query_log/part_log: a test server need not write system tables. -->
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
</yandex>
EOF
	cat >"$dir/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <!-- readonly=2: SELECT and SET, no writes, no DDL. -->
        <analyst>
            <readonly>2</readonly>
            <max_memory_usage>4000000000</max_memory_usage>
        </analyst>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <analyst>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>analyst</profile>
            <quota>default</quota>
        </analyst>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

cmd_start() {
	local dir=${CLICKHOUSE_DIR:-/tmp/feedmeter-clickhouse}
	local tcp=${CLICKHOUSE_TCP_PORT:-9000} http=${CLICKHOUSE_HTTP_PORT:-8123}
	cmd_install
	local bin; bin=$(server_bin)
	if [[ -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
		if ping "$http"; then echo "127.0.0.1:$tcp"; return 0; fi
		die "a server from $dir is running (pid $(cat "$dir/pid")) but does not answer on port $http"
	fi
	for p in "$tcp" "$http"; do
		port_in_use "$p" && die "port 127.0.0.1:$p is in use; set CLICKHOUSE_TCP_PORT / CLICKHOUSE_HTTP_PORT"
	done
	write_config "$dir" "$tcp" "$http"
	# setsid: the server gets its own session, so a signal to our process
	# group (Ctrl-C in make) does not reach it before `stop` does.
	setsid "$bin" --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 </dev/null &
	echo $! >"$dir/pid"
	local i
	for ((i = 0; i < 600; i++)); do
		if ping "$http"; then echo "127.0.0.1:$tcp"; return 0; fi
		if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
			tail -20 "$dir/log/stdout.log" "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
			die "clickhouse-server exited during start-up (logs in $dir/log)"
		fi
		sleep 0.1
	done
	tail -20 "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
	die "clickhouse-server did not answer on 127.0.0.1:$http within 60 s (logs in $dir/log)"
}

cmd_stop() {
	local dir=${CLICKHOUSE_DIR:-/tmp/feedmeter-clickhouse}
	[[ -f "$dir/pid" ]] || return 0
	local pid; pid=$(cat "$dir/pid")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 300; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "clickhouse.sh: pid $pid did not stop within 30 s; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$dir/pid"
}

cmd_status() {
	local http=${CLICKHOUSE_HTTP_PORT:-8123} tcp=${CLICKHOUSE_TCP_PORT:-9000}
	if ping "$http"; then echo "127.0.0.1:$tcp"; return 0; fi
	echo "clickhouse.sh: no server answers on 127.0.0.1:$http" >&2
	return 1
}

cmd_run() {
	[[ "${1:-}" == "--" ]] && shift
	[[ $# -gt 0 ]] || die "run needs a command: scripts/clickhouse.sh run -- CMD..."
	export CLICKHOUSE_TCP_PORT=${CLICKHOUSE_TCP_PORT:-19000}
	export CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-18123}
	if ! server_bin >/dev/null && [[ "${CI:-}" != true ]] && [[ "$(id -u)" != 0 ]]; then
		echo "clickhouse.sh: clickhouse-server is not installed; running without it: tests that need it skip (scripts/clickhouse.sh install)" >&2
		"$@"
		return
	fi
	CLICKHOUSE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/feedmeter-clickhouse.XXXXXX")
	export CLICKHOUSE_DIR
	# shellcheck disable=SC2064
	trap "cmd_stop; rm -rf '$CLICKHOUSE_DIR'" EXIT
	local addr
	if ! addr=$(cmd_start); then
		[[ "${CI:-}" == true ]] && die "CI=true and ClickHouse could not be started"
		echo "clickhouse.sh: ClickHouse could not be started; running without it: tests that need it skip" >&2
		"$@"
		return
	fi
	echo "clickhouse.sh: clickhouse-server on $addr, data in $CLICKHOUSE_DIR" >&2
	local rc=0
	FEEDMETER_CLICKHOUSE=$addr "$@" || rc=$?
	return $rc
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
run) shift; cmd_run "$@" ;;
*) die "usage: scripts/clickhouse.sh install|start|stop|status|run -- CMD..." ;;
esac
