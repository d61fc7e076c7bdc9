# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_amprof_global_optspecs
    string join \n h/help V/version
end

function __fish_amprof_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_amprof_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_amprof_using_subcommand
    set -l cmd (__fish_amprof_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c amprof -n "__fish_amprof_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c amprof -n "__fish_amprof_needs_command" -s V -l version -d 'Print version'
complete -c amprof -n "__fish_amprof_needs_command" -f -a "record" -d 'Sample on-CPU stacks of the whole system, some processes, or a command'
complete -c amprof -n "__fish_amprof_needs_command" -f -a "report" -d 'Turn a capture into a summary, a flamegraph, folded stacks, perf.data or pprof; or compare two captures (--diff)'
complete -c amprof -n "__fish_amprof_needs_command" -f -a "push" -d 'Send a capture\'s windows as profiles to Datadog or an OTLP endpoint'
complete -c amprof -n "__fish_amprof_needs_command" -f -a "check" -d 'Show which recording modes this kernel supports: load every eBPF program (attaching none) and report, per program, whether the kernel took it and what its verifier needed'
complete -c amprof -n "__fish_amprof_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c amprof -n "__fish_amprof_using_subcommand record" -s F -l frequency -d 'Samples per second on each CPU' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -s d -l duration -d 'How long to record (e.g. 30s, 2m, 500ms); without it, until Ctrl-C or SIGTERM (or the command or target processes exit)' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -s w -l window -d 'Length of a time window' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -s k -l keep -d 'Keep only the last N windows (a ring). Default: all with --duration, 6 without' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -s p -l pid -d 'Profile only these processes, all their threads (comma-separated or repeated)' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -s o -l output -d 'Capture file to write (an existing one is kept as FILE.old)' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand record" -s g -l call-graph -d 'How to unwind user stacks: dwarf (the binaries\' CFI, walked in the kernel: complete stacks through code built without frame pointers), fp (frame pointers, cheapest; stops at code without them) or dwarf-copy (CFI unwinding of a copy of the stack, perf\'s way)' -r -f -a "fp\t'Frame pointers, walked by the kernel: cheapest, but stops at code built without them (most distribution binaries and libraries)'
dwarf\t'DWARF call frame information, walked in the kernel with unwind tables amprof builds from the binaries\' .eh_frame: complete stacks at any depth through glibc and stripped distribution binaries. Code without a table is unwound from a stack copy'
dwarf-copy\t'DWARF call frame information, perf\'s way: the kernel copies the top of the user stack (--stack-size) with each sample and amprof unwinds it. Deeper stacks are cut short'"
complete -c amprof -n "__fish_amprof_using_subcommand record" -l stack-size -d 'Bytes of user stack copied with each sample in dwarf-copy mode, and in dwarf mode where code has no unwind table (512 to 65536)' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l unwind-table-rows -d 'Room for unwind tables in the kernel in dwarf mode, in rows of 8 bytes (the default, 8388608, is 64 MiB: every binary of a busy machine). Tables that do not fit are counted, and their code unwound from stack copies' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l off-cpu-period -d 'With --off-cpu: a thread\'s short waits are summed in the kernel, and one off-CPU sample is sent per this much of its time off the CPU (a longer wait is sent alone, whole). Default: the sampling period (1/frequency)' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l buffer-size -d 'Size of the kernel-to-userspace ring buffer in bytes (a power of two); default scales with CPUs and frequency' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l push-to -d 'Also send each window to Datadog or an OTLP endpoint as it closes, while recording goes on, with the settings of `amprof push` (the same flags and environment variables). The capture is written all the same: it is what `amprof push --windows` resends from (with --keep it stays small); it cannot be skipped' -r -f -a "datadog\t''
otlp\t''"
complete -c amprof -n "__fish_amprof_using_subcommand record" -l push-queue -d 'With --push-to: windows waiting to be sent, at most; when the backend is slower or down, the oldest waiting window is dropped (and counted) to make room' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l timeout -d 'Longest wait for one request. Default: 10s; for otlp, $OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT or $OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds) if set' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l retries -d 'Retries of a request after a retryable failure (connection refused, 429, 5xx), 0 to 10. Default: 3' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l agent-url -d 'The Datadog Agent: http://HOST:PORT, https://HOST:PORT, unix:///PATH or a socket path. Default: DD_TRACE_AGENT_URL, else DD_AGENT_HOST and DD_TRACE_AGENT_PORT (8126), else the socket /var/run/datadog/apm.socket if it exists, else http://localhost:8126' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l site -d 'Datadog site for agentless uploads, e.g. datadoghq.eu. Default: DD_SITE, else datadoghq.com' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l intake-url -d 'Intake URL for agentless uploads (e.g. through a proxy). Default: https://intake.profile.SITE/api/v2/profile' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l service -d 'One service for every profile. Default: DD_SERVICE; without either, each program gets a service of its own, named after its executable (kernel threads: `kernel`)' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l env -d 'The `env` tag. Default: DD_ENV' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l version -d 'The `version` tag. Default: DD_VERSION' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l tag -d 'A tag for every profile (repeatable; comma-separated lists too), added to those of DD_TAGS' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l period -d 'Merge consecutive windows into profiles this long (e.g. 60s). Default: one profile per window' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l endpoint -d 'OTLP endpoint: a base URL (http/protobuf appends /v1development/profiles) or, for gRPC, a URL or host:port. Else $OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT (a full URL, used as is), $OTEL_EXPORTER_OTLP_ENDPOINT, or http://localhost:4318 (grpc: http://localhost:4317)' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l protocol -d 'OTLP transport. Else $OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL, or http/protobuf' -r -f -a "http/protobuf\t''
grpc\t''"
complete -c amprof -n "__fish_amprof_using_subcommand record" -l compression -d 'Request compression. Else $OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION, $OTEL_EXPORTER_OTLP_COMPRESSION, or gzip over HTTP and none over gRPC' -r -f -a "gzip\t''
none\t''"
complete -c amprof -n "__fish_amprof_using_subcommand record" -l header -d 'An extra request header, e.g. for a token (repeatable). Added to $OTEL_EXPORTER_OTLP_HEADERS and $OTEL_EXPORTER_OTLP_PROFILES_HEADERS (name=value,...), which keep secrets out of process listings. Header values are never printed' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -l ca-cert -d 'PEM file of the certificate authorities to trust for TLS (besides the system\'s). Else $OTEL_EXPORTER_OTLP_PROFILES_CERTIFICATE or $OTEL_EXPORTER_OTLP_CERTIFICATE' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand record" -l max-request-size -d 'Largest request (encoded, before compression), e.g. 4MiB: windows are batched up to it, and a window larger on its own is split by process. gRPC servers refuse more than 4 MiB by default' -r
complete -c amprof -n "__fish_amprof_using_subcommand record" -s q -l quiet -d 'No progress bar: only the final summary line'
complete -c amprof -n "__fish_amprof_using_subcommand record" -l json -d 'Print the final summary as JSON on standard output'
complete -c amprof -n "__fish_amprof_using_subcommand record" -l inline -d 'Show inlined functions as frames of their own, with source lines (needs debug info)'
complete -c amprof -n "__fish_amprof_using_subcommand record" -l off-cpu -d 'Also record where threads wait off the CPU (blocked on sleeps, locks, I/O, or runnable and waiting for a CPU), and for how long: the stack each blocked in, taken when it runs again. `amprof report --event off-cpu` or `--event wall` shows it'
complete -c amprof -n "__fish_amprof_using_subcommand record" -l agentless -d 'Send straight to Datadog\'s intake, with the API key in DD_API_KEY (never a flag). This is the default when DD_API_KEY is set and no Agent is configured'
complete -c amprof -n "__fish_amprof_using_subcommand record" -l insecure -d 'gRPC without TLS for an endpoint given as host:port (an http:// or https:// endpoint says it itself). Else $OTEL_EXPORTER_OTLP_PROFILES_INSECURE or $OTEL_EXPORTER_OTLP_INSECURE'
complete -c amprof -n "__fish_amprof_using_subcommand record" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c amprof -n "__fish_amprof_using_subcommand report" -s i -l input -d 'Capture file to read (with --diff: the new capture, "after")' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand report" -l diff -d 'Compare with this capture, the base ("before"): as a summary of the functions whose share changed most, a differential flamegraph (red: grew, blue: shrank; normalised by each side\'s total), or folded `stack base new` lines (the base column normalised). --window, --pid and --comm select in the new capture, --base-* in this one' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand report" -l base-window -d 'With --diff: windows of the base capture (default: --window)' -r
complete -c amprof -n "__fish_amprof_using_subcommand report" -l base-pid -d 'With --diff: processes of the base capture (default: --pid; an error if the base has none of those)' -r
complete -c amprof -n "__fish_amprof_using_subcommand report" -l base-comm -d 'With --diff: process names of the base capture (default: --comm)' -r
complete -c amprof -n "__fish_amprof_using_subcommand report" -s f -l format -d 'Output format' -r -f -a "summary\t'Capture metadata, windows, and top functions, for a terminal (or JSON with --json)'
flamegraph\t'An interactive SVG flamegraph (inferno)'
folded\t'Folded stacks, one `frame;frame;... count` line per stack (for inferno, FlameGraph, speedscope)'
perf\t'perf.data, for `perf report`, `perf script`, hotspot and other perf tools'
pprof\t'Gzipped pprof (profile.proto), for `go tool pprof` and pprof-speaking backends'
firefox\t'The Firefox Profiler (profiler.firefox.com, or `samply load`): a timeline per thread, markers for CPUs, windows and off-CPU waits; gzipped when the name ends in .gz'"
complete -c amprof -n "__fish_amprof_using_subcommand report" -s o -l output -d 'Where to write: a file, or - for standard output. Default: flamegraph.svg, perf.data, profile.pb.gz (pprof) and profile.json.gz (firefox) for those formats; standard output for summary and folded' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand report" -l window -d 'Only window N, or windows A..B (inclusive), by the index the summary shows' -r
complete -c amprof -n "__fish_amprof_using_subcommand report" -s p -l pid -d 'Only these processes (comma-separated or repeated)' -r
complete -c amprof -n "__fish_amprof_using_subcommand report" -s c -l comm -d 'Only processes with these names (comma-separated or repeated)' -r
complete -c amprof -n "__fish_amprof_using_subcommand report" -s e -l event -d 'Which samples: on-CPU, off-CPU (time blocked or waiting for a CPU; needs a capture recorded with --off-cpu), or wall (both, as time)' -r -f -a "on-cpu\t'Samples of threads running on a CPU'
off-cpu\t'Time threads spent off the CPU: blocked (sleeps, locks, I/O) or waiting for a CPU'
wall\t'Both, as time: where the threads\' wall-clock time went'"
complete -c amprof -n "__fish_amprof_using_subcommand report" -l top -d 'Functions and processes listed in the summary (with --diff: functions in each list)' -r
complete -c amprof -n "__fish_amprof_using_subcommand report" -l json -d 'The summary as JSON'
complete -c amprof -n "__fish_amprof_using_subcommand report" -s q -l quiet -d 'No notes on standard error'
complete -c amprof -n "__fish_amprof_using_subcommand report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c amprof -n "__fish_amprof_using_subcommand push; and not __fish_seen_subcommand_from datadog otlp help" -l to -d 'The destination, as the subcommand says it: datadog or otlp (`push --to datadog` is `push datadog`)' -r -f -a "datadog\t''
otlp\t''"
complete -c amprof -n "__fish_amprof_using_subcommand push; and not __fish_seen_subcommand_from datadog otlp help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c amprof -n "__fish_amprof_using_subcommand push; and not __fish_seen_subcommand_from datadog otlp help" -f -a "datadog" -d 'To a Datadog Agent, or Datadog\'s intake with DD_API_KEY'
complete -c amprof -n "__fish_amprof_using_subcommand push; and not __fish_seen_subcommand_from datadog otlp help" -f -a "otlp" -d 'To an OpenTelemetry (OTLP) profiles endpoint, over HTTP or gRPC'
complete -c amprof -n "__fish_amprof_using_subcommand push; and not __fish_seen_subcommand_from datadog otlp help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -s i -l input -d 'Capture file to read' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l windows -d 'Only these windows (indices or ranges, comma-separated: 3,5..7), e.g. those that failed' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -s p -l pid -d 'Only these processes (comma-separated or repeated)' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -s c -l comm -d 'Only processes with these names (comma-separated or repeated)' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -s o -l output -d 'Directory for --dry-run' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l timeout -d 'Longest wait for one request. Default: 10s; for otlp, $OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT or $OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds) if set' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l retries -d 'Retries of a request after a retryable failure (connection refused, 429, 5xx), 0 to 10. Default: 3' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l agent-url -d 'The Datadog Agent: http://HOST:PORT, https://HOST:PORT, unix:///PATH or a socket path. Default: DD_TRACE_AGENT_URL, else DD_AGENT_HOST and DD_TRACE_AGENT_PORT (8126), else the socket /var/run/datadog/apm.socket if it exists, else http://localhost:8126' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l site -d 'Datadog site for agentless uploads, e.g. datadoghq.eu. Default: DD_SITE, else datadoghq.com' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l intake-url -d 'Intake URL for agentless uploads (e.g. through a proxy). Default: https://intake.profile.SITE/api/v2/profile' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l service -d 'One service for every profile. Default: DD_SERVICE; without either, each program gets a service of its own, named after its executable (kernel threads: `kernel`)' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l env -d 'The `env` tag. Default: DD_ENV' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l version -d 'The `version` tag. Default: DD_VERSION' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l tag -d 'A tag for every profile (repeatable; comma-separated lists too), added to those of DD_TAGS' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l period -d 'Merge consecutive windows into profiles this long (e.g. 60s). Default: one profile per window' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l dry-run -d 'Write each request (headers and body) to files in the -o directory instead of sending'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l json -d 'Print the summary as JSON on standard output'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -s q -l quiet -d 'No progress bar: only the final summary line'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l check -d 'Ask the Datadog Agent (GET /info) whether it accepts profiles, say what is wrong if not, and exit: nothing is pushed'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -l agentless -d 'Send straight to Datadog\'s intake, with the API key in DD_API_KEY (never a flag). This is the default when DD_API_KEY is set and no Agent is configured'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from datadog" -s h -l help -d 'Print help'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -s i -l input -d 'Capture file to read' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l windows -d 'Only these windows (indices or ranges, comma-separated: 3,5..7), e.g. those that failed' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -s p -l pid -d 'Only these processes (comma-separated or repeated)' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -s c -l comm -d 'Only processes with these names (comma-separated or repeated)' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -s o -l output -d 'Directory for --dry-run' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l timeout -d 'Longest wait for one request. Default: 10s; for otlp, $OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT or $OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds) if set' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l retries -d 'Retries of a request after a retryable failure (connection refused, 429, 5xx), 0 to 10. Default: 3' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l endpoint -d 'OTLP endpoint: a base URL (http/protobuf appends /v1development/profiles) or, for gRPC, a URL or host:port. Else $OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT (a full URL, used as is), $OTEL_EXPORTER_OTLP_ENDPOINT, or http://localhost:4318 (grpc: http://localhost:4317)' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l protocol -d 'OTLP transport. Else $OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL, or http/protobuf' -r -f -a "http/protobuf\t''
grpc\t''"
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l compression -d 'Request compression. Else $OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION, $OTEL_EXPORTER_OTLP_COMPRESSION, or gzip over HTTP and none over gRPC' -r -f -a "gzip\t''
none\t''"
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l header -d 'An extra request header, e.g. for a token (repeatable). Added to $OTEL_EXPORTER_OTLP_HEADERS and $OTEL_EXPORTER_OTLP_PROFILES_HEADERS (name=value,...), which keep secrets out of process listings. Header values are never printed' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l ca-cert -d 'PEM file of the certificate authorities to trust for TLS (besides the system\'s). Else $OTEL_EXPORTER_OTLP_PROFILES_CERTIFICATE or $OTEL_EXPORTER_OTLP_CERTIFICATE' -r -F
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l max-request-size -d 'Largest request (encoded, before compression), e.g. 4MiB: windows are batched up to it, and a window larger on its own is split by process. gRPC servers refuse more than 4 MiB by default' -r
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l dry-run -d 'Write each request (headers and body) to files in the -o directory instead of sending'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l json -d 'Print the summary as JSON on standard output'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -s q -l quiet -d 'No progress bar: only the final summary line'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -l insecure -d 'gRPC without TLS for an endpoint given as host:port (an http:// or https:// endpoint says it itself). Else $OTEL_EXPORTER_OTLP_PROFILES_INSECURE or $OTEL_EXPORTER_OTLP_INSECURE'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from otlp" -s h -l help -d 'Print help'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from help" -f -a "datadog" -d 'To a Datadog Agent, or Datadog\'s intake with DD_API_KEY'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from help" -f -a "otlp" -d 'To an OpenTelemetry (OTLP) profiles endpoint, over HTTP or gRPC'
complete -c amprof -n "__fish_amprof_using_subcommand push; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c amprof -n "__fish_amprof_using_subcommand check" -l json -d 'Print the result as JSON on stdout'
complete -c amprof -n "__fish_amprof_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c amprof -n "__fish_amprof_using_subcommand help; and not __fish_seen_subcommand_from record report push check help" -f -a "record" -d 'Sample on-CPU stacks of the whole system, some processes, or a command'
complete -c amprof -n "__fish_amprof_using_subcommand help; and not __fish_seen_subcommand_from record report push check help" -f -a "report" -d 'Turn a capture into a summary, a flamegraph, folded stacks, perf.data or pprof; or compare two captures (--diff)'
complete -c amprof -n "__fish_amprof_using_subcommand help; and not __fish_seen_subcommand_from record report push check help" -f -a "push" -d 'Send a capture\'s windows as profiles to Datadog or an OTLP endpoint'
complete -c amprof -n "__fish_amprof_using_subcommand help; and not __fish_seen_subcommand_from record report push check help" -f -a "check" -d 'Show which recording modes this kernel supports: load every eBPF program (attaching none) and report, per program, whether the kernel took it and what its verifier needed'
complete -c amprof -n "__fish_amprof_using_subcommand help; and not __fish_seen_subcommand_from record report push check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c amprof -n "__fish_amprof_using_subcommand help; and __fish_seen_subcommand_from push" -f -a "datadog" -d 'To a Datadog Agent, or Datadog\'s intake with DD_API_KEY'
complete -c amprof -n "__fish_amprof_using_subcommand help; and __fish_seen_subcommand_from push" -f -a "otlp" -d 'To an OpenTelemetry (OTLP) profiles endpoint, over HTTP or gRPC'
