"""Checks pthread_self() == fs_base and finds the tid offset inside struct pthread (glibc: 0x2d0)."""
import ctypes, threading, struct
libc = ctypes.CDLL(None, use_errno=True)
def fs():
    v = ctypes.c_ulong(); libc.syscall(158, 0x1003, ctypes.byref(v)); return v.value   # ARCH_GET_FS
def show():
    ident = threading.get_ident(); tid = threading.get_native_id()
    hits = [o for o in range(0, 2048, 4) if struct.unpack("<I", ctypes.string_at(ident + o, 4))[0] == tid]
    print("pthread_self==fs_base:", ident == fs(), "tid found at offsets", [hex(h) for h in hits])
show(); t = threading.Thread(target=show); t.start(); t.join()
