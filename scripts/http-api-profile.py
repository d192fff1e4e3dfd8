#!/usr/bin/env python3
"""Where a broker's CPU goes, by part, from `perf record` files (scripts/http-api-cost.sh with PERF).

Usage: scripts/http-api-profile.py FILE DELIVERED [FILE DELIVERED ...]

FILE is a perf.data of one run, DELIVERED that run's `delivered` column in the bench's CSV.
Prints a Markdown table: per part (the self samples of the symbols it names, matched in the
order below), samples per 1,000 deliveries, a column per file. Sampling rates differ between
perf sessions: compare the columns of files recorded in one run of the script, and mostly the
shares. Standard library and `perf report` only.
"""
import re
import subprocess
import sys

CATS=[
 ("ack table (record/insert, its index and JSON parse)", r"page::acks|serde_json|hashbrown|sip::Hasher|hash_one|events::ack_key|KeyHasher|from_utf8"),
 ("msgack correlation (envelope parse, ack store, publisher property)", r"envelope|ack_store|Tracker<S>::acknowledge|Tracker<S>::handle_delivery|PublishProperties|String as core::clone|properties::"),
 ("event encoding (core JSON encoder)", r"activity_core::event::|serde_json_core|json_scan|EventSender::record"),
 ("event queue, dispatcher, event_seq", r"mpsc|Dispatcher|append_event_seq|EventHub|KindHolds|events::"),
 ("allocator (mimalloc)", r"_mi_|mi_|operator delete|__rust_alloc|__rust_dealloc|rust_no_alloc|raw_vec|finish_grow"),
 ("memcpy/memset/memcmp", r"__mem"),
 ("bytes refcounts", r"bytes::bytes"),
 ("kernel", r"^\[k\]"),
]
def load(f):
    out=subprocess.run(["perf","report","-i",f,"--no-children","-n","--sort","sym","-g","none"],capture_output=True,text=True).stdout
    d={}
    for line in out.splitlines():
        m=re.match(r'\s*\S+%\s+(\d+)\s+(\[.\])\s+(.*)',line)
        if not m: continue
        sym=m.group(2)+" "+m.group(3).strip()
        d[sym]=d.get(sym,0)+int(m.group(1))
    return d
def cat(d, n):
    res={c:0.0 for c,_ in CATS}; res["other (the broker, the router, tokio)"]=0.0
    for s,v in d.items():
        for c,rx in CATS:
            if re.search(rx, s if c=="kernel" else s[4:]):
                res[c]+=v; break
        else: res["other (the broker, the router, tokio)"]+=v
    tot=sum(d.values())
    return {k:v/n*1000 for k,v in res.items()}, tot/n*1000
cols=[]
for i in range(1,len(sys.argv),2):
    cols.append(cat(load(sys.argv[i]), float(sys.argv[i+1])))
print("| part | "+" | ".join(sys.argv[i] for i in range(1, len(sys.argv), 2))+" |")
print("|---|"+"---|"*len(cols))
for k in cols[0][0]:
    print(f"| {k} | "+" | ".join(f"{c[0][k]:.1f}" for c in cols)+" |")
print("| total | "+" | ".join(f"{c[1]:.1f}" for c in cols)+" |")
