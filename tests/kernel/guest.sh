# The suite the kernel matrix (.ci/kernel-matrix) runs inside each kernel, as root in a busybox
# initramfs: amprof and the fixtures are in /bin. It records, and leaves judging to the host
# (tests/kernel/check.py reads what it writes to /tmp/out: the captures, each command's stdout,
# stderr and exit code).
out=/tmp/out
mkdir -p "$out"
cd "$out" || exit 1
uname -r > kernel

# run NAME ARGS...: `amprof ARGS`, with its stdout, stderr and exit code in NAME.{out,err,rc}.
run() {
  name=$1
  shift
  echo "guest: amprof $*"
  amprof "$@" > "$name.out" 2> "$name.err"
  echo $? > "$name.rc"
}

run check check --json
# Each -g mode on deep recursion: 200 frames without frame pointers for the DWARF modes, 100
# with them for fp (the kernel's frame-pointer walk stops at 127 frames).
run dwarf record -d 20s -o dwarf.data --json -- /bin/recursion-nofp 3 200 2
run copy record -d 20s -g dwarf-copy -o copy.data --json -- /bin/recursion-nofp 3 200 2
run fp record -d 20s -g fp -o fp.data --json -- /bin/recursion-fp 3 100 2
# -p: a process that was running before amprof started.
/bin/recursion-nofp 8 50 1 &
pid=$!
echo "$pid" > pid.pid
sleep 1
run pid record -d 2s -p "$pid" -o pid.data --json
kill "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
# Off-CPU: threads that block in sleep, a mutex and pipes; the fixture's own measurements go
# to offcpu.out (the command's stdout).
run offcpu record -d 20s --off-cpu -o offcpu.data -- /bin/offcpu-nofp 3
# Off-CPU waits of different lengths, sites and reasons, at 99 and 999 Hz: the fixture's own
# measurements go to mixed-F.out.
for frequency in 99 999; do
  run "mixed-$frequency" record --off-cpu -F "$frequency" -o "mixed-$frequency.data" -- /bin/mixed-waits 5
done
