#!/bin/sh
# Set up a gas-bench host, reference or watcher; idempotent. `install.sh --help` says how;
# deploy/README.md says why.
set -eu
umask 022

APP=/opt/gas-bench            # the project and its .venv, on the host (without --prefix)
ETC=/etc/gas-bench            # the configurations
STATE=/var/lib/gas-bench      # install.log of a --prefix install
UNIT_DIR=/etc/systemd/system
LOGROTATE=/etc/logrotate.d/gas-bench
SPOOL=/var/spool/cron/crontabs

usage() {
    cat <<'EOF'
Usage: install.sh --role reference|watcher [options]

Set up this host as a gas-bench reference host (`cronjob`: the benchmarks, Tuesday and Friday
at 20:00 Europe/Paris) or watcher host (`watch_regressions`: regression reports, every 10
minutes). Idempotent: a second run changes nothing and says "unchanged"; the configuration and
the Slack token file are never overwritten.

Options:
  --role ROLE              reference or watcher (required)
  --user NAME              the service user (default: gas-bench); `useradd --system` if absent
  --prefix DIR             a trial install into DIR (tests): files go under DIR (DIR/opt/...,
                           DIR/etc/...); nothing outside it is touched: no user is created,
                           nothing is chowned, no crontab or systemctl command is run; those
                           commands are recorded in DIR/var/lib/gas-bench/install.log, and the
                           crontab is written to DIR/var/spool/cron/crontabs/USER
  --source DIR             the project to install (default: the one holding this script)
  --config-from FILE       the skeleton of a new configuration (default: the Tezos profile
                           bench/profiles/tezos.toml for reference, deploy/watcher.toml for
                           watcher); an existing configuration is never overwritten
  --work-dir DIR           written into a new configuration: reference.root (reference) or
                           watch.root (watcher); created, owned by the service user
  --store-url URL          written into a new configuration: store.url
  --slack-token-file FILE  written into a new configuration: slack.token_file (default: the
                           configuration's, ~/slack_token: the service user's home)
  --instance NAME          another configuration of the role on this host, e.g. one watcher
                           per store prefix: /etc/gas-bench/ROLE-NAME.toml, its own crontab
                           block or units gas-bench-ROLE-NAME.*, default work dir DIR/NAME
  --systemd                systemd service and timer units instead of the crontab (an
                           existing crontab block of this role is removed, and vice versa)
  --no-venv                skip the virtual environment (fast tests: the jobs cannot run)
  --python PYTHON          Python >= 3.11 (default: $PYTHON, else python3)
  -h, --help               this help

What it sets up (without --prefix):
  the user, home /home/USER     useradd --system --user-group --create-home
  /opt/gas-bench                the project (no .venv, .git, caches or work files), root-owned
  /opt/gas-bench/.venv          a virtual environment with the project installed
  /etc/gas-bench/ROLE.toml      the configuration, 0644, created only if absent
  ~USER/slack_token             the Slack token file (slack.token_file), created empty, 0600
  the work directory            reference.root or watch.root, owned by USER
  crontab of USER               crontab/ROLE.crontab, in a "# BEGIN gas-bench-ROLE" block
  or, with --systemd:           /etc/systemd/system/gas-bench-ROLE.{service,timer} and
                                /etc/gas-bench/ROLE.env (BENCH_CONFIG), timer enabled
  /etc/logrotate.d/gas-bench    rotation of the work directory's logs (never cron_res*)

Exit status: 0 done; 1 a step failed (fix it and run again); 2 usage error, nothing changed.
EOF
}

die() { # usage or precondition error: nothing was changed
    printf 'install.sh: %s\n' "$1" >&2
    exit 2
}

fail() {
    printf 'install.sh: %s\n' "$1" >&2
    exit 1
}

note() { printf '%-10s %s\n' "$1" "$2"; }

changes=0
changed() {
    changes=$((changes + 1))
    note "$1" "$2"
}

need_arg() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }

# --- arguments ----------

role=
user=gas-bench
prefix=
source_dir=
config_from=
work_dir_opt=
store_url_opt=
token_opt=
instance=
systemd=no
venv=yes
python=${PYTHON:-python3}

while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --role) need_arg "$@"; role=$2; shift ;;
        --role=*) role=${1#*=} ;;
        --user) need_arg "$@"; user=$2; shift ;;
        --user=*) user=${1#*=} ;;
        --prefix) need_arg "$@"; prefix=$2; shift ;;
        --prefix=*) prefix=${1#*=} ;;
        --source) need_arg "$@"; source_dir=$2; shift ;;
        --source=*) source_dir=${1#*=} ;;
        --config-from) need_arg "$@"; config_from=$2; shift ;;
        --config-from=*) config_from=${1#*=} ;;
        --work-dir) need_arg "$@"; work_dir_opt=$2; shift ;;
        --work-dir=*) work_dir_opt=${1#*=} ;;
        --store-url) need_arg "$@"; store_url_opt=$2; shift ;;
        --store-url=*) store_url_opt=${1#*=} ;;
        --slack-token-file) need_arg "$@"; token_opt=$2; shift ;;
        --slack-token-file=*) token_opt=${1#*=} ;;
        --instance) need_arg "$@"; instance=$2; shift ;;
        --instance=*) instance=${1#*=} ;;
        --systemd) systemd=yes ;;
        --no-venv) venv=no ;;
        --python) need_arg "$@"; python=$2; shift ;;
        --python=*) python=${1#*=} ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

case $role in
    reference | watcher) ;;
    '') die "--role reference|watcher is required (see --help)" ;;
    *) die "--role '$role': expected reference or watcher" ;;
esac
case $user in
    '' | [!a-z_]* | *[!a-z0-9_-]*)
        die "--user '$user': expected a user name: lower-case letters, digits, _ and -" ;;
esac
[ ${#user} -le 32 ] || die "--user '$user': at most 32 characters"
case $instance in
    *[!a-z0-9-]* | -*) die "--instance '$instance': expected lower-case letters, digits and -" ;;
esac

# Paths written into files that cron, logrotate or TOML read: no spaces or quotes.
check_path() { # check_path OPTION VALUE
    case $2 in
        /*) ;;
        *) die "$1 '$2': expected an absolute path" ;;
    esac
    case $2 in
        *[!A-Za-z0-9_./@+-]*) die "$1 '$2': only letters, digits and _ . / @ + - are allowed" ;;
    esac
}
[ -z "$work_dir_opt" ] || check_path --work-dir "$work_dir_opt"
[ -z "$token_opt" ] || check_path --slack-token-file "$token_opt"
case $store_url_opt in
    '' | s3://* | file:///*) ;;
    *) die "--store-url '$store_url_opt': expected s3://bucket/prefix or file:///path" ;;
esac
case $store_url_opt in
    *[\"\\\ ]*) die "--store-url '$store_url_opt': no spaces, quotes or backslashes" ;;
esac
# Strip trailing slashes.
while :; do
    case $work_dir_opt in */) work_dir_opt=${work_dir_opt%/} ;; *) break ;; esac
done

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P) || die "cannot find the script's directory"
[ -n "$source_dir" ] || source_dir=$(dirname -- "$here")
[ -d "$source_dir" ] || die "--source '$source_dir' is not a directory"
source_dir=$(CDPATH='' cd -- "$source_dir" && pwd -P)
for f in pyproject.toml bench/profiles/tezos.toml "crontab/$role.crontab" jobs/cronjob.sh \
    jobs/watch_regressions.sh "deploy/systemd/gas-bench-$role.service" \
    "deploy/systemd/gas-bench-$role.timer" deploy/watcher.toml; do
    [ -f "$source_dir/$f" ] || die "--source $source_dir is not the gas-bench project: $f is missing"
done
if [ -n "$config_from" ]; then
    [ -f "$config_from" ] || die "--config-from '$config_from': no such file"
fi

if [ -n "$prefix" ]; then
    case $prefix in
        /*) ;;
        *) prefix=$(pwd -P)/$prefix ;;
    esac
    while :; do
        case $prefix in */) prefix=${prefix%/} ;; *) break ;; esac
    done
    [ -n "$prefix" ] || die "--prefix /: leave --prefix out for a real install"
    [ ! -e "$prefix" ] || [ -d "$prefix" ] || die "--prefix '$prefix' is not a directory"
else
    [ "$(id -u)" -eq 0 ] || die "a real install needs root (sudo); --prefix DIR installs into DIR"
fi

command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python >= 3.11 or pass --python"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python is $("$python" -V 2>&1); Python >= 3.11 is needed (--python)"

if [ -z "$prefix" ]; then
    if ! getent passwd "$user" >/dev/null 2>&1; then
        command -v useradd >/dev/null 2>&1 || die "useradd not found: create the user $user first"
    fi
    if [ "$systemd" = yes ]; then
        command -v systemctl >/dev/null 2>&1 || die "systemctl not found: leave --systemd out to use cron"
    else
        command -v crontab >/dev/null 2>&1 || die "crontab not found: install cron, or use --systemd"
    fi
fi

name=gas-bench-$role
config_name=$role
if [ -n "$instance" ]; then
    name=$name-$instance
    config_name=$role-$instance
fi
CONFIG=$ETC/$config_name.toml
ENVFILE=$ETC/$config_name.env

p=$prefix # every path below is "$p<host path>"
install_log=$p$STATE/install.log

user_exists=no
if getent passwd "$user" >/dev/null 2>&1; then
    user_exists=yes
fi
if [ "$user_exists" = yes ]; then
    home=$(getent passwd "$user" | cut -d: -f6)
    group=$(id -gn "$user")
else
    home=/home/$user
    group=$user
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gas-bench-install.XXXXXX") || fail "cannot create a temporary directory"
cleanup() {
    status=$?
    rm -rf -- "$tmp"
    if [ "$status" -eq 1 ]; then
        printf 'install.sh: stopped before the end: fix the cause and run it again (it is idempotent)\n' >&2
    fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# --- helpers ----------

mode_of() { stat -c %a -- "$1"; }

# quote_cmd ARG...: the command as a shell line (arguments quoted only when they need it).
quote_cmd() {
    qc_line=
    for qc_arg in "$@"; do
        case $qc_arg in
            '' | *[!A-Za-z0-9_./:=@%+,-]*)
                qc_arg="'$(printf '%s' "$qc_arg" | sed "s/'/'\\\\''/g")'" ;;
        esac
        qc_line="$qc_line${qc_line:+ }$qc_arg"
    done
    printf '%s\n' "$qc_line"
}

# act CMD ARG...: run a command that changes the system, or, with --prefix, record it once in
# install.log.
act() {
    act_line=$(quote_cmd "$@")
    if [ -n "$prefix" ]; then
        if [ -f "$install_log" ] && grep -Fqx -- "$act_line" "$install_log"; then
            note unchanged "recorded: $act_line"
            return 0
        fi
        if [ ! -f "$install_log" ]; then
            mkdir -p -- "$(dirname -- "$install_log")"
            printf '# What a real install would have run (install.sh --prefix), each command once.\n' >"$install_log"
        fi
        printf '%s\n' "$act_line" >>"$install_log"
        changed recorded "$act_line"
    else
        "$@" || fail "failed: $act_line"
        changed ran "$act_line"
    fi
}

# copy_atomic SRC DEST MODE: replace DEST by a copy of SRC with MODE, atomically.
copy_atomic() {
    cp -- "$1" "$2.install-tmp"
    chmod "$3" "$2.install-tmp"
    mv -f -- "$2.install-tmp" "$2"
}

# put_file SRC DEST MODE [quiet]: DEST gets SRC's content and MODE; says what changed.
put_file() {
    pf_status=
    if [ ! -e "$2" ]; then
        mkdir -p -- "$(dirname -- "$2")"
        copy_atomic "$1" "$2" "$3"
        pf_status=created
    elif ! cmp -s -- "$1" "$2"; then
        copy_atomic "$1" "$2" "$3"
        pf_status=updated
    elif [ "$(mode_of "$2")" != "$3" ]; then
        chmod "$3" "$2"
        pf_status="fixed mode $3:"
    fi
    if [ -n "$pf_status" ]; then
        changed "$pf_status" "$2"
    elif [ $# -lt 4 ]; then
        note unchanged "$2"
    fi
}

# ensure_dir DIR MODE [OWNER]: create DIR with MODE (chown it to OWNER) if it does not exist.
ensure_dir() {
    if [ -d "$p$1" ]; then
        note unchanged "$p$1/"
        return 0
    fi
    mkdir -p -- "$p$1"
    chmod "$2" "$p$1"
    changed created "$p$1/"
    if [ $# -ge 3 ]; then
        act chown "$3" "$1"
    fi
}

# merge_block FILE NAME BLOCK OUT: OUT is FILE with the lines from "# BEGIN NAME" to "# END NAME"
# replaced by the file BLOCK (appended if absent; an empty BLOCK removes them).
merge_block() {
    mb_in=$1
    [ -f "$mb_in" ] || mb_in=/dev/null
    awk -v begin="# BEGIN $2" -v end="# END $2" '
        $0 == begin { b++ } $0 == end { e++ }
        END { exit !(b == e && b <= 1) }' "$mb_in" ||
        fail "$1: unbalanced or repeated '# BEGIN $2' / '# END $2' lines: fix them by hand"
    awk -v begin="# BEGIN $2" -v end="# END $2" -v block="$3" '
        function emit(  line) { while ((getline line < block) > 0) print line; close(block) }
        $0 == begin { skipping = 1; emit(); done = 1; next }
        skipping { if ($0 == end) skipping = 0; next }
        { print }
        END { if (!done) emit() }' "$mb_in" >"$4"
}

# set_key FILE SECTION KEY VALUE: KEY = "VALUE" in [SECTION] of the TOML FILE (replaced or added).
set_key() {
    awk -v section="[$2]" -v key="$3" -v line="$3 = \"$4\"" '
        function flush() { if (inside && !done) { print line; done = 1 } }
        {
            # Lines inside multi-line strings are never headers or keys.
            n = gsub(/"""|'"'''"'/, "&")
            if (multi) { if (n % 2) multi = 0; print; next }
        }
        /^[ \t]*\[/ {
            header = $0
            sub(/^[ \t]*/, "", header); sub(/[ \t]*(#.*)?$/, "", header)
            flush(); inside = (header == section); print; next
        }
        inside && !done && $0 ~ "^[ \t]*" key "[ \t]*=" { print line; done = 1; next }
        { if (n % 2) multi = 1; print }
        END { flush(); if (!done) { print ""; print section; print line } }' "$1" >"$1.new"
    mv -f -- "$1.new" "$1"
}

# read_config FILE: set cfg_work_dir, cfg_token_file, cfg_store_url from the TOML FILE, with the
# project's rules: relative paths against the configuration's directory, ~ the user's home,
# watch.root defaulting to <reference.root>/watch.
cfg_work_dir=
cfg_token_file=
cfg_store_url=
read_config() {
    rc_out=$("$python" - "$1" "$ETC" "$home" "$role" <<'EOF'
import os, re, shlex, sys, tomllib

path, base, home, role = sys.argv[1:5]


def bail(message):
    print(f"install.sh: {path}: {message}", file=sys.stderr)
    sys.exit(2)


try:
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
except (OSError, tomllib.TOMLDecodeError) as err:
    bail(f"not a valid TOML configuration: {err}")


def get(section, key):
    table = data.get(section, {})
    value = table.get(key, "") if isinstance(table, dict) else ""
    if not isinstance(value, str) or "\n" in value:
        bail(f"{section}.{key} must be a one-line string")
    return value


def resolve(value, key):
    if value == "~" or value.startswith("~/"):
        value = home + value[1:]
    elif value.startswith("~"):
        bail(f"{key} = {value!r}: use an absolute path or ~/ (the service user's home)")
    return os.path.normpath(os.path.join(base, value))


if role == "reference":
    if not get("reference", "root"):
        bail("reference.root (the work directory) is not set")
    work = resolve(get("reference", "root"), "reference.root")
elif get("watch", "root"):
    work = resolve(get("watch", "root"), "watch.root")
elif get("reference", "root"):
    work = os.path.join(resolve(get("reference", "root"), "reference.root"), "watch")
else:
    bail("watch.root (the watcher's work directory) is not set")
if not re.fullmatch(r"/[A-Za-z0-9_./@+-]*", work):
    bail(f"the work directory {work!r}: only letters, digits and _ . / @ + - are allowed")
token = get("slack", "token_file")
if token:
    if not token.startswith(("/", "~")):
        bail(f"slack.token_file = {token!r}: use an absolute path or ~/")
    token = resolve(token, "slack.token_file")
print(f"cfg_work_dir={shlex.quote(work)}")
print(f"cfg_token_file={shlex.quote(token)}")
print(f"cfg_store_url={shlex.quote(get('store', 'url'))}")
EOF
    ) || exit 2
    eval "$rc_out"
}

# --- plan: the configuration (nothing is written before it is known to be usable) ----------

config_new=no
if [ -e "$p$CONFIG" ]; then
    read_config "$p$CONFIG"
    mismatch() {
        die "$p$CONFIG exists (it is never overwritten) with $1 = $2, not $3: edit it, or drop $4"
    }
    if [ -n "$work_dir_opt" ] && [ "$work_dir_opt" != "$cfg_work_dir" ]; then
        mismatch "the work directory" "$cfg_work_dir" "$work_dir_opt" --work-dir
    fi
    if [ -n "$token_opt" ] && [ "$token_opt" != "$cfg_token_file" ]; then
        mismatch slack.token_file "$cfg_token_file" "$token_opt" --slack-token-file
    fi
    if [ -n "$store_url_opt" ] && [ "$store_url_opt" != "$cfg_store_url" ]; then
        mismatch store.url "$cfg_store_url" "$store_url_opt" --store-url
    fi
else
    config_new=yes
    skeleton=$tmp/config.toml
    if [ -n "$config_from" ]; then
        cp -- "$config_from" "$skeleton"
    elif [ "$role" = reference ]; then
        cp -- "$source_dir/bench/profiles/tezos.toml" "$skeleton"
    else
        cp -- "$source_dir/deploy/watcher.toml" "$skeleton"
    fi
    if [ -z "$work_dir_opt" ] && [ -n "$instance" ]; then
        read_config "$skeleton"
        work_dir_opt=$cfg_work_dir/$instance
    fi
    if [ -n "$work_dir_opt" ]; then
        if [ "$role" = reference ]; then
            set_key "$skeleton" reference root "$work_dir_opt"
        else
            set_key "$skeleton" watch root "$work_dir_opt"
        fi
    fi
    [ -z "$store_url_opt" ] || set_key "$skeleton" store url "$store_url_opt"
    [ -z "$token_opt" ] || set_key "$skeleton" slack token_file "$token_opt"
    read_config "$skeleton"
fi
work_dir=$cfg_work_dir
token_file=$cfg_token_file

if [ -n "$prefix" ]; then
    note mode "trial install into $prefix: system commands are recorded in $install_log"
fi

# --- the service user ----------

if [ "$user_exists" = yes ]; then
    note unchanged "user $user (exists)"
else
    act useradd --system --user-group --create-home --home-dir "$home" --shell /bin/sh \
        --comment gas-bench "$user"
    if [ -z "$prefix" ]; then
        group=$(id -gn "$user")
    fi
fi

# --- the project and its virtual environment ----------

# The project's files, relative, sorted; never the virtual environment, git, caches, build
# products or what the jobs write when the project directory is their work directory.
list_tree() {
    (
        cd -- "$1" && find . \( -name .git -o -name .venv -o -name __pycache__ \
            -o -name '*.egg-info' -o -name .mypy_cache -o -name .pytest_cache -o -name .ruff_cache \
            -o -name .hypothesis -o -name .benchmarks -o -name .tox -o -name .nox \
            -o -name '.coverage*' -o -name '*.py[co]' -o -name '*~' -o -name '*.install-tmp' \
            -o -path ./build -o -path ./dist -o -path ./cron_res -o -path ./cron_res_errors \
            -o -path ./current_run_dir -o -path ./last_run_dir -o -path ./anomalies \
            -o -path ./.lock -o -path ./.last_refusal -o -path ./outbox -o -path ./store \
            -o -path ./demo-origin -o -path ./demo-checkout -o -path ./snoop_results \
            -o -path ./watch \) -prune -o -type f -print
    ) | sed 's|^\./||' | LC_ALL=C sort
}

app=$p$APP
ensure_dir "$APP" 755
list_tree "$source_dir" >"$tmp/source.list"
list_tree "$app" >"$tmp/installed.list"
files=0
copied=0
while IFS= read -r rel; do
    files=$((files + 1))
    mode=644
    [ ! -x "$source_dir/$rel" ] || mode=755
    before=$changes
    put_file "$source_dir/$rel" "$app/$rel" "$mode" quiet
    [ "$changes" -eq "$before" ] || copied=$((copied + 1))
done <"$tmp/source.list"
LC_ALL=C comm -13 "$tmp/source.list" "$tmp/installed.list" >"$tmp/stale.list"
while IFS= read -r rel; do
    rm -f -- "$app/$rel"
    changed removed "$app/$rel"
done <"$tmp/stale.list"
if [ "$copied" -eq 0 ] && [ ! -s "$tmp/stale.list" ]; then
    note unchanged "$app ($files files)"
fi

if [ "$venv" = yes ]; then
    venv_dir=$app/.venv
    stamp=$venv_dir/.gas-bench-installed
    fingerprint=$(
        cd -- "$app" && {
            "$python" -c 'import sys; print(sys.version)'
            find pyproject.toml bench -name __pycache__ -prune -o -type f ! -name '*.py[co]' \
                -exec cksum {} + | LC_ALL=C sort
        } | cksum
    )
    if [ ! -x "$venv_dir/bin/python" ]; then
        "$python" -m venv "$venv_dir" || fail "cannot create the virtual environment $venv_dir"
        changed created "$venv_dir/"
    fi
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && [ -x "$venv_dir/bin/cronjob" ]; then
        note unchanged "$venv_dir/ (the project is installed)"
    else
        # Build from a copy: pip builds in the source tree, which must stay as copied.
        mkdir "$tmp/build"
        cp -R -- "$app/pyproject.toml" "$app/README.md" "$app/bench" "$tmp/build/"
        note installing "the project into $venv_dir (pip; a minute or two the first time)"
        "$venv_dir/bin/python" -m pip install --quiet --no-input "$tmp/build" ||
            fail "pip could not install the project into $venv_dir"
        printf '%s\n' "$fingerprint" >"$stamp"
        changed installed "the project into $venv_dir/"
    fi
else
    note skipped "the virtual environment (--no-venv): the jobs cannot run until it exists"
fi

# --- the configuration ----------

ensure_dir "$ETC" 755
if [ "$config_new" = yes ]; then
    put_file "$skeleton" "$p$CONFIG" 644
else
    note kept "$p$CONFIG (an existing configuration is never overwritten)"
fi

# --- the work directory ----------

ensure_dir "$work_dir" 755 "$user:$group"
if [ -z "$prefix" ] && [ "$(stat -c %U -- "$work_dir")" != "$user" ]; then
    note warning "$work_dir is owned by $(stat -c %U -- "$work_dir"), not $user: the jobs write there"
fi

# --- the Slack token file ----------

token_new=no
if [ -z "$token_file" ]; then
    note skipped "the Slack token file: slack.token_file is not set in $p$CONFIG"
else
    token_parent=$(dirname -- "$token_file")
    if [ -d "$p$token_parent" ]; then
        :
    elif [ "$token_parent" = "$home" ] && [ "$user_exists" = no ]; then
        ensure_dir "$home" 750 # a real install's useradd --create-home makes it
    else
        ensure_dir "$token_parent" 750 "$user:$group"
    fi
    if [ -e "$p$token_file" ] || [ -L "$p$token_file" ]; then
        if [ -L "$p$token_file" ] || [ ! -f "$p$token_file" ]; then
            fail "$p$token_file is not a regular file: remove it, then run again"
        fi
        token_mode=$(mode_of "$p$token_file")
        case $token_mode in
            [0-7]00) note unchanged "$p$token_file (mode $token_mode, content kept)" ;;
            *)
                chmod 600 "$p$token_file"
                changed "fixed mode 600:" "$p$token_file (was $token_mode; content kept)"
                ;;
        esac
        if [ -z "$prefix" ] && [ "$(stat -c %U -- "$token_file")" != "$user" ]; then
            act chown "$user:$group" "$token_file"
        fi
    else
        (set -C && umask 077 && : >"$p$token_file") || fail "cannot create $p$token_file"
        chmod 600 "$p$token_file"
        changed created "$p$token_file (empty, mode 600)"
        act chown "$user:$group" "$token_file"
        token_new=yes
    fi
fi

# --- the schedule: a crontab block, or systemd units ----------

watch_log=$work_dir/watch_regressions.log
: >"$tmp/empty"

# The user's crontab with this role's block replaced by BLOCK (a file; empty: removed).
put_crontab() {
    if [ -n "$prefix" ]; then
        spool=$p$SPOOL/$user
        if [ ! -s "$1" ] && [ ! -e "$spool" ]; then
            return 0
        fi
        merge_block "$spool" "$name" "$1" "$tmp/crontab.new"
        put_file "$tmp/crontab.new" "$spool" 600
    else
        crontab -u "$user" -l >"$tmp/crontab.old" 2>/dev/null || : >"$tmp/crontab.old"
        merge_block "$tmp/crontab.old" "$name" "$1" "$tmp/crontab.new"
        if cmp -s "$tmp/crontab.old" "$tmp/crontab.new"; then
            [ ! -s "$1" ] || note unchanged "crontab of $user ($name block)"
        else
            act crontab -u "$user" "$tmp/crontab.new"
        fi
    fi
}

service=$p$UNIT_DIR/$name.service
timer=$p$UNIT_DIR/$name.timer
if [ "$systemd" = yes ]; then
    units_changed=$changes
    for kind in service timer; do
        sed -e "s|^User=.*|User=$user|" -e "s|^Group=.*|Group=$group|" \
            -e "s|^EnvironmentFile=.*|EnvironmentFile=$ENVFILE|" \
            -e "s|$ETC/$role\\.toml|$CONFIG|g" \
            -e "s|gas-bench-$role\\.service|$name.service|g" \
            "$source_dir/deploy/systemd/gas-bench-$role.$kind" >"$tmp/unit.$kind"
        put_file "$tmp/unit.$kind" "$p$UNIT_DIR/$name.$kind" 644
    done
    {
        printf '# The environment of %s.service (deploy/install.sh writes it).\n' "$name"
        printf 'BENCH_CONFIG=%s\n' "$CONFIG"
    } >"$tmp/env"
    put_file "$tmp/env" "$p$ENVFILE" 644
    if [ "$changes" -ne "$units_changed" ]; then
        act systemctl daemon-reload
    fi
    if [ -z "$prefix" ] && systemctl is-enabled --quiet "$name.timer" 2>/dev/null &&
        systemctl is-active --quiet "$name.timer" 2>/dev/null; then
        note unchanged "$name.timer (enabled and active)"
    else
        act systemctl enable --now "$name.timer"
    fi
    put_crontab "$tmp/empty" # the timer replaces the crontab block
else
    {
        printf '# BEGIN %s\n' "$name"
        printf '# Installed by %s/deploy/install.sh --role %s: run it again rather than edit this block.\n' "$APP" "$role"
        if [ "$role" = watcher ]; then
            printf '# Ticks append to %s; a failed tick (exit status not 0 or 5) mails its tail.\n' "$watch_log"
        fi
        sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' \
            -e "s|^BENCH_CONFIG=.*|BENCH_CONFIG=$CONFIG|" \
            -e "s|[^[:space:]]*/jobs/cronjob\\.sh|$APP/jobs/cronjob.sh|" \
            -e "s|[^[:space:]]*/jobs/watch_regressions\\.sh|$APP/jobs/watch_regressions.sh|" \
            "$source_dir/crontab/$role.crontab" |
            awk -v tail=" >>$watch_log 2>&1 || [ \$? -eq 5 ] || tail -n 20 $watch_log" \
                '/\/jobs\/watch_regressions\.sh$/ { $0 = $0 tail } { print }'
        printf '# END %s\n' "$name"
    } >"$tmp/block"
    put_crontab "$tmp/block"
    if [ -e "$service" ] || [ -e "$timer" ]; then # the crontab replaces the timer
        act systemctl disable --now "$name.timer"
        rm -f -- "$service" "$timer"
        changed removed "$service $timer"
        act systemctl daemon-reload
    fi
    if [ -z "$prefix" ] && [ "$role" = reference ]; then
        zone=$(cat /etc/timezone 2>/dev/null || readlink /etc/localtime 2>/dev/null || :)
        case $zone in
            *Europe/Paris) ;;
            *) note note "CRON_TZ=Europe/Paris is honoured by cronie, not by Debian's cron, which runs the job at 20:00 in the host's zone (${zone:-unknown}): set the zone or use --systemd" ;;
        esac
    fi
fi

# --- log rotation of the work directory's logs ----------

{
    printf '# BEGIN %s\n' "$name"
    printf '# Installed by %s/deploy/install.sh --role %s: run it again rather than edit this block.\n' "$APP" "$role"
    if [ "$role" = reference ]; then
        printf '# Only anomalies: never cron_res or cron_res_errors, which each run moves into its run\n'
        printf '# directory (rotating them would split a run'"'"'s log).\n'
        printf '%s/anomalies {\n' "$work_dir"
        printf '    monthly\n    rotate 24\n'
    else
        printf '# The ticks'"'"' log (the crontab block appends to it; under systemd, the journal has it).\n'
        printf '%s {\n' "$watch_log"
        printf '    weekly\n    rotate 8\n'
    fi
    printf '    su %s %s\n' "$user" "$group"
    printf '    compress\n    delaycompress\n    missingok\n    notifempty\n'
    printf '    # Appended to by each job, which creates it again.\n    nocreate\n'
    printf '}\n'
    printf '# END %s\n' "$name"
} >"$tmp/logrotate"
merge_block "$p$LOGROTATE" "$name" "$tmp/logrotate" "$tmp/logrotate.new"
put_file "$tmp/logrotate.new" "$p$LOGROTATE" 644

# --- summary ----------

if [ "$changes" -eq 0 ]; then
    note "done" "nothing changed"
else
    note "done" "$changes change(s)"
fi
if [ "$config_new" = yes ] || [ "$token_new" = yes ]; then
    echo
    echo "Next:"
    [ "$config_new" = no ] || echo "  - edit $p$CONFIG (store.url, slack.channel, the work directory)"
    if [ "$token_new" = yes ]; then
        echo "  - write the Slack bot token into $p$token_file: while it is empty the jobs stop with"
        echo "    'the Slack token file ... is empty' (or remove slack.token_file to use the outbox)"
    fi
    echo "  - check: sudo -u $user $APP/.venv/bin/bench-run --config $CONFIG --show-config"
fi
