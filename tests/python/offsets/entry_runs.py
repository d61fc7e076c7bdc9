"""Prints each frame of a thread blocked inside sorted(key=...) with its owner / is_entry:
shows where one _PyEval_EvalFrameDefault C call's run of Python frames ends (3.11+)."""
import sys, threading, time
sys.argv=['x', __import__('os').path.join(__import__('os').path.dirname(__file__) or '.', 'out-%d.%d.txt'%sys.version_info[:2])]
src=open(__import__('os').path.join(__import__('os').path.dirname(__file__) or '.', 'walk_check.py')).read().split('# Frames are walked')[0]
exec(src)
ev=threading.Event(); go=threading.Event()
def key(x): go.set(); ev.wait(); return x
def leaf(): return sorted([1], key=key)
def top(): leaf()
t=threading.Thread(target=top, daemon=True); t.start(); go.wait(); time.sleep(0.05)
ts=find(t.ident, t.native_id); f=current_frame(ts); out=[]
while f:
    if V < (3,11):
        c=u64(f+T["frame.f_code"]); out.append(pystr(u64(c+T["code.co_name"]))); f=u64(f+T["frame.f_back"]); continue
    key_="iframe.f_code" if V<(3,13) else "iframe.f_executable"
    c=u64(f+T[key_]); own=u8(f+T["iframe.owner"])
    ent = u8(f+T["iframe.is_entry"]) if V<(3,12) else None
    name = pystr(u64(c+T["code.co_name"])) if c and u64(c+T["object.ob_type"])==CODE_TYPE else hex(c)
    out.append((name, "owner=%d"%own, "entry=%s"%ent) if V<(3,12) else (name,"owner=%d"%own))
    f=u64(f+T["iframe.previous"])
print(sys.version.split()[0], out)
ev.set()
