/* Prints the byte offsets amprof's Python walker needs, computed by the compiler from one
 * CPython build's own headers (public + internal). Build per version:
 *   cc -I$PREFIX/include/python3.X -I$PREFIX/include/python3.X/internal offsets.c -o offsets
 * Output: one "name offset" line per field (decimal), "-" fields absent in that version.
 * Bitfield positions of PyASCIIObject.state are found by setting each field in a zeroed
 * struct and reading back the word (bit numbers, LSB = 0). */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <frameobject.h>
#if PY_VERSION_HEX >= 0x03090000
#include "pycore_runtime.h"
#include "pycore_interp.h"
#else
#include "pycore_pystate.h"
#endif
#if PY_VERSION_HEX >= 0x030B0000
#include "pycore_frame.h"
#endif
#if PY_VERSION_HEX >= 0x030D0000
#include "pycore_code.h"
#endif

#define P(name, expr) printf("%-40s %zu\n", name, (size_t)(expr))
#define O(name, type, field) P(name, offsetof(type, field))

static int lowest_bit(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n * 8; i++)
        if (b[i / 8] & (1u << (i % 8))) return (int)i;
    return -1;
}

int main(void) {
    printf("%-40s %d.%d.%d\n", "version", PY_MAJOR_VERSION, PY_MINOR_VERSION, PY_MICRO_VERSION);
    P("PY_VERSION_HEX", PY_VERSION_HEX);
    /* runtime */
    O("runtime.interpreters.head", _PyRuntimeState, interpreters.head);
    O("runtime.interpreters.main", _PyRuntimeState, interpreters.main);
#if PY_VERSION_HEX < 0x030C0000
    O("runtime.gilstate.tstate_current", _PyRuntimeState, gilstate.tstate_current);
#endif
#if PY_VERSION_HEX < 0x030C0000
    O("runtime.autoTSSkey", _PyRuntimeState, gilstate.autoTSSkey);
#else
    O("runtime.autoTSSkey", _PyRuntimeState, autoTSSkey);
#endif
#if PY_VERSION_HEX >= 0x030D0000
    O("runtime.debug_offsets", _PyRuntimeState, debug_offsets);
    P("sizeof(_Py_DebugOffsets)", sizeof(_Py_DebugOffsets));
    /* where each offset amprof needs sits inside _Py_DebugOffsets ("debug@<table key>") */
#define D(key, field) P("debug@" key, offsetof(_Py_DebugOffsets, field))
    D("version", version);
    D("free_threaded", free_threaded);
    D("runtime.interpreters.head", runtime_state.interpreters_head);
    D("interp.next", interpreter_state.next);
    D("interp.threads.head", interpreter_state.threads_head);
    D("tstate.next", thread_state.next);
    D("tstate.interp", thread_state.interp);
    D("tstate.current_frame", thread_state.current_frame);
    D("tstate.thread_id", thread_state.thread_id);
    D("tstate.native_thread_id", thread_state.native_thread_id);
    D("iframe.previous", interpreter_frame.previous);
    D("iframe.f_executable", interpreter_frame.executable);
    D("iframe.instr_ptr", interpreter_frame.instr_ptr);
    D("iframe.owner", interpreter_frame.owner);
    D("code.co_filename", code_object.filename);
    D("code.co_name", code_object.name);
    D("code.co_qualname", code_object.qualname);
    D("code.co_linetable", code_object.linetable);
    D("code.co_firstlineno", code_object.firstlineno);
    D("code.co_argcount", code_object.argcount);
    D("code.co_code_adaptive", code_object.co_code_adaptive);
    D("sizeof(PyCodeObject)", code_object.size);
    D("object.ob_type", pyobject.ob_type);
    D("type.tp_name", type_object.tp_name);
    D("type.tp_flags", type_object.tp_flags);
    D("varobject.ob_size", bytes_object.ob_size);
    D("bytes.ob_sval", bytes_object.ob_sval);
    D("unicode.state", unicode_object.state);
    D("unicode.length", unicode_object.length);
    D("sizeof(PyASCIIObject)", unicode_object.asciiobject_size);
#endif
    O("Py_tss_t._key", Py_tss_t, _key);
    /* interpreter */
    O("interp.next", PyInterpreterState, next);
#if PY_VERSION_HEX < 0x030B0000
    O("interp.threads.head", PyInterpreterState, tstate_head);
#else
    O("interp.threads.head", PyInterpreterState, threads.head);
#endif
    /* thread state */
    O("tstate.next", PyThreadState, next);
    O("tstate.interp", PyThreadState, interp);
    O("tstate.thread_id", PyThreadState, thread_id);
#if PY_VERSION_HEX >= 0x030B0000
    O("tstate.native_thread_id", PyThreadState, native_thread_id);
#endif
#if PY_VERSION_HEX < 0x030B0000
    O("tstate.frame", PyThreadState, frame);
#elif PY_VERSION_HEX < 0x030D0000
    O("tstate.cframe", PyThreadState, cframe);
    O("cframe.current_frame", _PyCFrame, current_frame);
#if PY_VERSION_HEX < 0x030C0000
    O("cframe.previous", _PyCFrame, previous);
#endif
#else
    O("tstate.current_frame", PyThreadState, current_frame);
#endif
    /* frames */
#if PY_VERSION_HEX < 0x030B0000
    O("frame.f_back", PyFrameObject, f_back);
    O("frame.f_code", PyFrameObject, f_code);
    O("frame.f_lasti", PyFrameObject, f_lasti);
    O("frame.f_lineno", PyFrameObject, f_lineno);
#else
#if PY_VERSION_HEX < 0x030D0000
    O("iframe.f_code", _PyInterpreterFrame, f_code);
    O("iframe.prev_instr", _PyInterpreterFrame, prev_instr);
#else
    O("iframe.f_executable", _PyInterpreterFrame, f_executable);
    O("iframe.instr_ptr", _PyInterpreterFrame, instr_ptr);
#endif
    O("iframe.previous", _PyInterpreterFrame, previous);
    O("iframe.owner", _PyInterpreterFrame, owner);
#if PY_VERSION_HEX < 0x030C0000
    O("iframe.is_entry", _PyInterpreterFrame, is_entry);
#else
    P("FRAME_OWNED_BY_CSTACK", FRAME_OWNED_BY_CSTACK);
#endif
    P("FRAME_OWNED_BY_GENERATOR", FRAME_OWNED_BY_GENERATOR);
    P("sizeof(_Py_CODEUNIT)", sizeof(_Py_CODEUNIT));
#endif
    /* code objects */
    O("code.co_argcount", PyCodeObject, co_argcount);
    O("code.co_kwonlyargcount", PyCodeObject, co_kwonlyargcount);
    O("code.co_flags", PyCodeObject, co_flags);
    O("code.co_firstlineno", PyCodeObject, co_firstlineno);
    O("code.co_filename", PyCodeObject, co_filename);
    O("code.co_name", PyCodeObject, co_name);
#if PY_VERSION_HEX >= 0x030B0000
    O("code.co_qualname", PyCodeObject, co_qualname);
    O("code.co_code_adaptive", PyCodeObject, co_code_adaptive);
    O("code.co_linetable", PyCodeObject, co_linetable);
#elif PY_VERSION_HEX >= 0x030A0000
    O("code.co_code", PyCodeObject, co_code);
    O("code.co_linetable", PyCodeObject, co_linetable);
#else
    O("code.co_code", PyCodeObject, co_code);
    O("code.co_lnotab", PyCodeObject, co_lnotab);
#endif
    P("sizeof(PyCodeObject)", sizeof(PyCodeObject));
    /* objects */
    O("object.ob_type", PyObject, ob_type);
    O("varobject.ob_size", PyVarObject, ob_size);
    O("type.tp_name", PyTypeObject, tp_name);
    O("type.tp_flags", PyTypeObject, tp_flags);
    O("bytes.ob_sval", PyBytesObject, ob_sval);
    O("unicode.length", PyASCIIObject, length);
    O("unicode.state", PyASCIIObject, state);
    P("sizeof(PyASCIIObject)", sizeof(PyASCIIObject));
    P("sizeof(PyCompactUnicodeObject)", sizeof(PyCompactUnicodeObject));
    {
        PyASCIIObject a;
#define BIT(field, val) memset(&a, 0, sizeof a); a.state.field = val; \
        P("unicode.state." #field ".bit", lowest_bit(&a.state, sizeof a.state));
        BIT(interned, 1) BIT(kind, 1) BIT(compact, 1) BIT(ascii, 1)
#if PY_VERSION_HEX < 0x030C0000
        BIT(ready, 1)
#endif
        P("sizeof(unicode.state)", sizeof a.state);
    }
    return 0;
}
