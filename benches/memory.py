"""Helpers of benches/memory.sh: where a process's resident memory is, from /proc/PID/smaps.

    python3 benches/memory.py breakdown PID [LABEL]   one line of KiB per component (tab-separated)
    python3 benches/memory.py table FILE               the lines of one or more breakdowns, as a table
    python3 benches/memory.py maps PID [MIN_KIB]       every mapping with at least MIN_KIB resident
    python3 benches/memory.py text PID [TOP]           whose code is resident, per crate
    python3 benches/memory.py coverage EXE ORDER_FILE  how many functions of benches/link-order.txt EXE has

Components (Rss of the mappings; what a mapping is, from its name, permissions and neighbours):
- binary text / rodata / data+bss: the executable's own mappings (r-x, r--, rw- and the anonymous
  mapping right after its rw- part, which is its .bss);
- libraries: every other file-backed mapping (libc, the loader, vdso);
- thread stacks: the mapping holding each thread's stack pointer (from /proc/PID/task/TID/syscall,
  which needs ptrace rights over the process: the same user), named by the thread;
- [heap]: the brk heap (the C library's main malloc arena);
- other anonymous: everything else (mimalloc's segments, other malloc arenas, mmap'ed buffers).
"""
import collections
import os
import sys


def mappings(pid):
    """[(start, end, perms, name, rss_kib)] from /proc/PID/smaps."""
    out, cur = [], None
    for line in open(f"/proc/{pid}/smaps"):
        parts = line.split()
        if "-" in parts[0] and not parts[0].endswith(":"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            cur = [lo, hi, parts[1], parts[5] if len(parts) > 5 else "", 0]
            out.append(cur)
        elif parts[0] == "Rss:":
            cur[4] = int(parts[1])
    return out


def stack_pointers(pid):
    """{thread name: [stack pointer]} for every thread (/proc/PID/task/TID/syscall: "... sp pc")."""
    sps = collections.defaultdict(list)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            fields = open(f"/proc/{pid}/task/{tid}/syscall").read().split()
        except OSError:
            continue
        if len(fields) >= 3 and fields[-2].startswith("0x"):
            sps[comm].append(int(fields[-2], 16))
    return sps


def classify(pid):
    """{component: KiB} and the number of threads."""
    exe = os.path.realpath(f"/proc/{pid}/exe")
    maps = mappings(pid)
    stacks = {}
    for name, sps in stack_pointers(pid).items():
        for sp in sps:
            for i, m in enumerate(maps):
                if m[0] <= sp < m[1]:
                    stacks[i] = name
    kib = collections.Counter()
    for i, (lo, hi, perms, name, rss) in enumerate(maps):
        if i in stacks:
            kib[f"stack: {stacks[i]}"] += rss
        elif name == exe:
            kib[{"r-x": "binary text", "r--": "binary rodata"}.get(perms[:3], "binary data+bss")] += rss
        elif name == "" and i > 0 and maps[i - 1][3] == exe and maps[i - 1][1] == lo and perms[:2] == "rw":
            kib["binary data+bss"] += rss
        elif name.startswith("/") or name in ("[vdso]", "[vvar]", "[vsyscall]"):
            kib["libraries"] += rss
        elif name == "[heap]":
            kib["[heap] (brk)"] += rss
        elif name == "[stack]":
            kib["stack: main (unmatched)"] += rss
        else:
            kib["other anonymous"] += rss
    threads = sum(len(v) for v in stack_pointers(pid).values())
    return kib, threads


def status_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def breakdown(pid, label="now"):
    kib, threads = classify(pid)
    total = status_kib(pid, "VmRSS")
    stacks = sum(v for k, v in kib.items() if k.startswith("stack"))
    print(f"{label}\tVmRSS\t{total}")
    print(f"{label}\tthreads\t{threads}")
    for k in sorted(kib):
        print(f"{label}\t{k}\t{kib[k]}")
    print(f"{label}\tstacks (all threads)\t{stacks}")


def table(path):
    rows = collections.OrderedDict()
    labels = []
    for line in open(path):
        label, what, v = line.rstrip("\n").split("\t")
        if label not in labels:
            labels.append(label)
        rows.setdefault(what, {})[label] = int(v)
    width = max(len(w) for w in rows) + 2
    print(f"{'KiB':<{width}}" + "".join(f"{l:>22}" for l in labels))
    for what, vals in rows.items():
        print(f"{what:<{width}}" + "".join(f"{vals.get(l, 0):>22}" for l in labels))


def maps(pid, min_kib="64"):
    for lo, hi, perms, name, rss in mappings(pid):
        if rss >= int(min_kib):
            print(f"{lo:x}-{hi:x} {perms} {(hi - lo) // 1024:>9} KiB virt {rss:>7} KiB rss  {name}")



def text(pid, top="25"):
    """Which crates' code is resident: the executable's r-x pages present (/proc/PID/pagemap, bit 63),
    each 4 KiB page given to the crate of the function covering most of it (symbols from nm)."""
    import bisect
    import re
    import struct
    import subprocess
    exe = os.path.realpath(f"/proc/{pid}/exe")
    maps = mappings(pid)
    lo, hi, off = next((m[0], m[1], None) for m in maps if m[3] == exe and m[2].startswith("r-x"))
    base = next(m[0] for m in maps if m[3] == exe)  # the load address (first mapping, offset 0)
    syms = []
    for line in subprocess.run(["nm", "-C", "--defined-only", exe], capture_output=True, text=True).stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16) + base, parts[2]))
    syms.sort()
    addrs = [a for a, _ in syms]

    def crate(name):
        name = name.lstrip("<&*(").removeprefix("dyn ").removeprefix("mut ")
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", name)
        return m.group(0) if m else name[:20]

    per, present = collections.Counter(), 0
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(lo // 4096 * 8)
        data = f.read((hi - lo) // 4096 * 8)
    for i in range(len(data) // 8):
        (v,) = struct.unpack_from("<Q", data, i * 8)
        if not v >> 63 & 1:
            continue
        present += 1
        page = lo + i * 4096
        j = bisect.bisect_right(addrs, page + 2048) - 1
        per[crate(syms[j][1]) if j >= 0 else "?"] += 4
    print(f"text resident {present * 4} KiB of {(hi - lo) // 1024} KiB")
    for k, v in per.most_common(int(top)):
        print(f"{v:>8} KiB  {k}")


def coverage(exe, order):
    """How many of the functions benches/link-order.txt lists the binary has (a stale list places fewer
    of the functions the sidecar runs together: see build.rs)."""
    import subprocess
    out = subprocess.run(["nm", "--defined-only", exe], capture_output=True, text=True).stdout
    have = {p[2] for p in (l.split() for l in out.splitlines()) if len(p) == 3}
    listed = [l.strip() for l in open(order) if l.strip() and not l.startswith("#")]
    found = sum(n in have for n in listed)
    # A function LLVM made local to a module is named NAME.llvm.HASH, HASH a digest of the module: a change of
    # the module's code renames it, and so (seen for four modules of cedar-policy-core) does another path of
    # the profile in RUSTFLAGS or another target directory. Either way the list does not place it; counted
    # apart, for the reader to tell.
    local = {n.split(".llvm.")[0] for n in have if ".llvm." in n}
    renamed = sum(n not in have and ".llvm." in n and n.split(".llvm.")[0] in local for n in listed)
    more = f" ({renamed} more under another module hash)" if renamed else ""
    print(f"link order: the binary has {found} of the {len(listed)} functions {order} lists{more}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"breakdown": breakdown, "table": table, "maps": maps, "text": text, "coverage": coverage}[cmd](*args)
