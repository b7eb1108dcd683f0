#!/usr/bin/env python3
"""Builds synonyms.tsv, the compact synonym table sequin's augment crate ships, from WordNet 3.0.

Source: Debian's `wordnet-base` package (WordNet 3.0, Princeton University; WordNet licence, see
LICENSE). Fetch and unpack it, then run this script on its data folder:

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb wn
    python3 datasets/wordnet-synonyms/build.py wn/usr/share/wordnet > datasets/wordnet-synonyms/synonyms.tsv

Output: one line per (word, part of speech) with at least one synonym:
`word<TAB>pos<TAB>syn1,syn2,...` where pos is n, v, a or r (adjective satellites count as a).
Only single-word lemmas (no spaces, underscores or digits) are kept, lowercased; synonyms are
the other lemmas of the word's synsets, in WordNet's order (most frequent sense first), at most
12 per entry. Deterministic: the same input gives the same bytes.
"""
import os, sys

def main(src):
    table = {}
    for fname, pos in [("data.noun", "n"), ("data.verb", "v"), ("data.adj", "a"), ("data.adv", "r")]:
        with open(os.path.join(src, fname), encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # licence header
                parts = line.split()
                w_cnt = int(parts[3], 16)
                words = []
                for i in range(w_cnt):
                    w = parts[4 + 2 * i]
                    if pos == "a":
                        w = w.split("(")[0]  # adjective markers like (p), (a), (ip)
                    words.append(w.lower())
                simple = [w for w in words if w.isalpha() and w.isascii()]
                for w in simple:
                    syns = table.setdefault((w, pos), [])
                    for o in simple:
                        if o != w and o not in syns:
                            syns.append(o)
    out = sys.stdout
    for (w, pos) in sorted(table):
        syns = table[(w, pos)][:12]
        if syns:
            out.write(f"{w}\t{pos}\t{','.join(syns)}\n")

if __name__ == "__main__":
    main(sys.argv[1])
