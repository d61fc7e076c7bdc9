"""Checks an offsets table (offsets.c's output) against a live interpreter's own memory.

Run with the interpreter whose table it is:  python3.X walk_check.py out-3.X.txt
From _PyRuntime (found by symbol through ctypes, as amprof finds it through ELF symbols) it
walks interpreters -> threads (matching native_thread_id / thread_id, as the eBPF side would),
then the frame chain, reading only raw memory with the table's offsets; decodes co_name,
co_qualname, co_filename (compact ASCII/UCS1) and the line of each frame (lnotab, 3.10 line
table, 3.11+ location table, implemented from the formats' documentation), and compares all
with what the interpreter itself says (sys._current_frames, f_lineno, id(code)).
Exit 0 = every check passed. Works for 3.8-3.13; needs no compiler at run time."""
import ctypes, struct, sys, threading, time

T = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    T[k] = v if k == "version" else int(v)
assert T["version"].rsplit(".", 1)[0] == "%d.%d" % sys.version_info[:2], "table is for another version"
V = sys.version_info[:2]

def rd(addr, n): return ctypes.string_at(addr, n)
def u64(addr): return struct.unpack("<Q", rd(addr, 8))[0]
def i32(addr): return struct.unpack("<i", rd(addr, 4))[0]
def u32(addr): return struct.unpack("<I", rd(addr, 4))[0]
def u8(addr): return rd(addr, 1)[0]

RUNTIME = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
CODE_TYPE = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "PyCode_Type"))

def pystr(obj):
    """A str object's text, from memory: compact strings only (what names and files are)."""
    state = u32(obj + T["unicode.state"])
    kind = (state >> T["unicode.state.kind.bit"]) & 7
    compact = (state >> T["unicode.state.compact.bit"]) & 1
    ascii_ = (state >> T["unicode.state.ascii.bit"]) & 1
    n = u64(obj + T["unicode.length"])
    assert compact and n < 4096, (hex(state), n)
    if ascii_:
        return rd(obj + T["sizeof(PyASCIIObject)"], n).decode("ascii")
    data = obj + T["sizeof(PyCompactUnicodeObject)"]
    return rd(data, n * kind).decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind])

def pybytes(obj):
    n = u64(obj + T["varobject.ob_size"])
    return rd(obj + T["bytes.ob_sval"], n)

def line_lnotab(tab, first, lasti_bytes):          # 3.8-3.9, Objects/lnotab_notes.txt
    line, addr = first, 0
    for i in range(0, len(tab), 2):
        addr += tab[i]
        if addr > lasti_bytes: break
        d = tab[i + 1]; line += d - 256 if d >= 128 else d
    return line

def line_310(tab, first, lasti_bytes):             # 3.10, Objects/lnotab_notes.txt
    line, start = first, 0
    for i in range(0, len(tab), 2):
        sd, ld = tab[i], tab[i + 1]
        ld = ld - 256 if ld >= 128 else ld
        end = start + sd
        if ld != -128: line += ld
        if start <= lasti_bytes < end: return None if ld == -128 else line
        start = end
    return None

def line_311(tab, first, index):                   # 3.11+, Objects/locations.md
    pos, line, addr = 0, first, 0
    def varint():
        nonlocal pos
        v = shift = 0
        while True:
            b = tab[pos]; pos += 1
            v |= (b & 63) << shift; shift += 6
            if not b & 64: return v
    def svarint():
        v = varint(); return -(v >> 1) if v & 1 else v >> 1
    while pos < len(tab):
        b = tab[pos]; pos += 1
        assert b & 128
        code, length = (b >> 3) & 15, (b & 7) + 1
        this = line
        if code == 15: this = None
        elif code == 14: line += svarint(); this = line; varint(); varint(); varint()
        elif code == 13: line += svarint(); this = line
        elif code in (10, 11, 12): line += code - 10; this = line; pos += 2
        else: pos += 1
        if addr <= index < addr + length: return this
        addr += length
    return None

def current_frame(ts):
    if V < (3, 11): return u64(ts + T["tstate.frame"])
    if V < (3, 13): return u64(u64(ts + T["tstate.cframe"]) + T["cframe.current_frame"])
    return u64(ts + T["tstate.current_frame"])

def frames(ts):
    """(code address, line) of each Python frame, innermost first: what eBPF + userspace do."""
    out, f = [], current_frame(ts)
    while f and len(out) < 256:
        if V < (3, 11):
            code = u64(f + T["frame.f_code"]); lasti = i32(f + T["frame.f_lasti"])
            nxt = u64(f + T["frame.f_back"])
        else:
            key = "iframe.f_code" if V < (3, 13) else "iframe.f_executable"
            code = u64(f + T[key]); nxt = u64(f + T["iframe.previous"])
            owner = u8(f + T["iframe.owner"])
            if V >= (3, 12) and owner == T["FRAME_OWNED_BY_CSTACK"]: f = nxt; continue
            if u64(code + T["object.ob_type"]) != CODE_TYPE: f = nxt; continue   # 3.13: None
            ip = u64(f + T["iframe.prev_instr" if V < (3, 13) else "iframe.instr_ptr"])
            lasti = (ip - (code + T["code.co_code_adaptive"])) // 2   # code units
        assert u64(code + T["object.ob_type"]) == CODE_TYPE
        first = i32(code + T["code.co_firstlineno"])
        if V < (3, 10): line = line_lnotab(pybytes(u64(code + T["code.co_lnotab"])), first, lasti)
        elif V < (3, 11): line = line_310(pybytes(u64(code + T["code.co_linetable"])), first, lasti * 2)
        else: line = line_311(pybytes(u64(code + T["code.co_linetable"])), first, lasti)
        out.append((code, line, lasti))
        f = nxt
    return out

def threads():
    interp = u64(RUNTIME + T["runtime.interpreters.head"])
    ts = u64(interp + T["interp.threads.head"])
    while ts:
        yield ts
        ts = u64(ts + T["tstate.next"])

def find(ident, native):
    for ts in threads():
        if "tstate.native_thread_id" in T:
            if u64(ts + T["tstate.native_thread_id"]) == native:
                assert u64(ts + T["tstate.thread_id"]) == ident
                return ts
        elif u64(ts + T["tstate.thread_id"]) == ident:
            return ts
    raise AssertionError("thread not found")

def check(ts, pyframe, what):
    got = frames(ts)
    want = []
    while pyframe is not None:
        want.append(pyframe); pyframe = pyframe.f_back
    assert len(got) == len(want), (what, len(got), len(want))
    for (code, line, lasti), f in zip(got, want):
        c = f.f_code
        assert code == id(c), (what, c.co_name)
        name = pystr(u64(code + T["code.co_name"]))
        assert name == c.co_name, (name, c.co_name)
        assert pystr(u64(code + T["code.co_filename"])) == c.co_filename
        if V >= (3, 11): assert pystr(u64(code + T["code.co_qualname"])) == c.co_qualname
        assert line == f.f_lineno, (what, name, line, f.f_lineno, lasti, f.f_lasti)
    return [(pystr(u64(c + T["code.co_name"])), l) for c, l, _ in got]

# Frames are walked as a profiler sees them: from another thread, while the walked thread
# is blocked (a thread's own chain changes under a walk it does itself: 3.11+ frames live in
# a reused per-thread stack).
ready, done, finished = threading.Event(), threading.Event(), threading.Event()
def waiter_inner(): ready.set(); done.wait()
def waiter(): waiter_inner()
t = threading.Thread(target=waiter, daemon=True); t.start(); ready.wait()

main_ident, main_native = threading.get_ident(), threading.get_native_id()
result = {}
def checker():
    try:
        while True:  # until main blocks in finished.wait() inside método
            f = sys._current_frames()[main_ident]
            if f.f_back and f.f_back.f_back and f.f_back.f_back.f_code.co_name == "método":
                break
            time.sleep(0.001)
        time.sleep(0.05)  # let it reach the lock acquire, where it stays
        main = find(main_ident, main_native)
        result["main"] = check(main, sys._current_frames()[main_ident], "main thread")
        result["other"] = check(find(t.ident, t.native_id), sys._current_frames()[t.ident], "other")
        if V < (3, 12):
            # the GIL holder is this checker thread
            cur = u64(RUNTIME + T["runtime.gilstate.tstate_current"])
            assert cur == find(threading.get_ident(), threading.get_native_id()), "tstate_current"
    except BaseException as e:
        result["error"] = e
    finally:
        done.set(); finished.set()

class K:
    def método(self):           # a non-ASCII (UCS1) name
        c = threading.Thread(target=checker); c.start(); finished.wait(); c.join()
def outer(): return [K().método() for _ in range(1)]   # a comprehension frame (<3.12)

outer()
if "error" in result: raise result["error"]
if V >= (3, 13):
    assert rd(RUNTIME, 8) == b"xdebugpy"
    assert u64(RUNTIME + 8) == sys.hexversion, hex(u64(RUNTIME + 8))
    n = 0
    for k, at in T.items():   # _Py_DebugOffsets in memory says what the headers said
        if k.startswith("debug@") and k not in ("debug@version", "debug@free_threaded"):
            assert u64(RUNTIME + at) == T[k[6:]], (k, u64(RUNTIME + at), T[k[6:]]); n += 1
    assert u64(RUNTIME + T["debug@free_threaded"]) == 0
    print("_Py_DebugOffsets: %d offsets match the headers" % n)
print(sys.version.split()[0], "OK", "main:", result["main"], "other:", result["other"][2:4])
