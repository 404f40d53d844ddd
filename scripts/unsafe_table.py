#!/usr/bin/env python3
# Prints the table of every `unsafe` block for docs/SECURITY.md: where it is,
# the function around it, and the first sentence of its SAFETY comment.
# Usage: scripts/unsafe_table.py (from anywhere); paste over the table.
import glob, os, re

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))


def first_sentence(text):
    # A sentence ends at '. ' followed by a capital letter or a backtick.
    m = re.search(r'\.\s+(?=[A-Z`])', text)
    return text[: m.start() + 1] if m else text


rows=[]
SOURCES = ['crates/cleanslate-guest/src', 'crates/cleanslate/src', 'guests/javascript/src']
for path in sorted(p for d in SOURCES for p in glob.glob(d + '/**/*.rs', recursive=True)):
    lines=open(path).read().split('\n')
    i=0
    while i<len(lines):
        l=lines[i].strip()
        if l.startswith('// SAFETY:'):
            text=[l[len('// SAFETY:'):].strip()]
            j=i+1
            while j<len(lines) and lines[j].strip().startswith('//'):
                text.append(lines[j].strip()[2:].strip()); j+=1
            # find unsafe line
            k=j
            while k<len(lines) and 'unsafe' not in lines[k]: k+=1
            # enclosing fn
            f=None
            for m in range(k,-1,-1):
                mm=re.search(r'\bfn\s+(\w+)',lines[m])
                if mm and not lines[m].strip().startswith('//'): f=mm.group(1); break
                mi=re.match(r'\s*(unsafe )?impl\b(.*)\{',lines[m])
                if mi and m==k: f='impl'+mi.group(2).rstrip(); break
            full=' '.join(text)
            rows.append((path.replace('crates/',''),k+1,f,first_sentence(full)))
            i=j
        else: i+=1
for r in rows: print(f"| `{r[0]}:{r[1]}` | `{r[2]}` | {r[3]} |")
