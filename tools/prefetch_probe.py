"""Ad hoc probe (eleventh session, reverted after its run): a file tree's page-cache residency
(mincore) recorded, evicted (posix_fadvise DONTNEED) or prefetched (WILLNEED) from a record.

    python tools/prefetch_probe.py record|evict|resident|prefetch RECORD ROOT...
"""
import ctypes, mmap, os, sys, json, time
from pathlib import Path
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
ROOTS = [sys.argv[2:]]
def files():
    for root in sys.argv[3:]:
        for dp, dn, fn in os.walk(root):
            for f in fn:
                p = os.path.join(dp, f)
                if os.path.isfile(p) and not os.path.islink(p): yield p
def ranges(p):
    size = os.path.getsize(p)
    if size == 0: return []
    fd = os.open(p, os.O_RDONLY)
    try:
        a = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        n = (size + 4095)//4096; v = ctypes.create_string_buffer(n)
        libc.mincore(a, size, v); libc.munmap(a, size)
    finally: os.close(fd)
    out=[]; start=None
    raw=v.raw
    for i in range(n):
        r = raw[i] & 1
        if r and start is None: start=i
        if not r and start is not None: out.append([start*4096,(i-start)*4096]); start=None
    if start is not None: out.append([start*4096,(n-start)*4096])
    return out
cmd = sys.argv[1]
if cmd == "record":
    rec = {}
    for p in files():
        r = ranges(p)
        if r: rec[p]=r
    json.dump(rec, open(sys.argv[2],"w"))
    print(len(rec), "files", sum(l for r in rec.values() for _,l in r)/1e6, "MB")
elif cmd == "evict":
    n=0
    for p in files():
        fd=os.open(p, os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd); n+=1
    print("evicted", n)
elif cmd == "resident":
    print(sum(l for p in files() for _,l in ranges(p))/1e6, "MB")
elif cmd == "prefetch":
    t=time.perf_counter()
    rec=json.load(open(sys.argv[2]))
    from concurrent.futures import ThreadPoolExecutor
    def one(item):
        p, rs = item
        try: fd=os.open(p, os.O_RDONLY)
        except OSError: return
        try:
            for o,l in rs: os.posix_fadvise(fd,o,l,os.POSIX_FADV_WILLNEED)
        finally: os.close(fd)
    with ThreadPoolExecutor(int(os.environ.get("PF_THREADS","4"))) as ex: list(ex.map(one, rec.items()))
    print("prefetch issued in", time.perf_counter()-t, file=sys.stderr)
