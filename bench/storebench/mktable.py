# Builds the markdown table from results.txt (one line per run, as written by run.sh/run-extra.sh).
import collections
rows = collections.OrderedDict()
for l in open('results.txt'):
    d = dict(kv.split('=', 1) for kv in l.split() if '=' in kv)
    rows.setdefault((d['engine'], int(d['G']), d['variant']), []).append(d)
order = {'sled': 0, 'redb': 1, 'fjall': 2, 'fjall-mt8': 3}
print('| engine | G | variant | msgs/s (run 1 / run 2) | CPU µs/msg (run 1 / run 2) | peak RSS MiB | disk MiB | load at start |')
print('|---|---|---|---|---|---|---|---|')
for k in sorted(rows, key=lambda k: (k[2] != 'full', order[k[0]], k[1])):
    r = rows[k]
    j = lambda f: ' / '.join(x[f] for x in r)
    print(f"| {k[0]} | {k[1]} | {k[2]} | {j('msgs_per_s')} | {j('cpu_us_per_msg')} | {j('peak_rss_mib')} | {j('disk_mib')} | {j('load_at_start')} |")
