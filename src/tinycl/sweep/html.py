"""report.html: one self-contained page (plots as data URIs, a sortable table, the recommended config)."""

from __future__ import annotations

import base64
import html
import json

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#eee;cursor:pointer;user-select:none}
td.l,th.l{text-align:left}
tr.pruned{color:#999} tr.failed{color:#b03a2e} tr.rec{background:#fff6cc}
pre{background:#f6f6f6;padding:.8em;border:1px solid #ddd}
img{max-width:100%}
"""

# Click a header: sort the rows by that column (numbers as numbers, empty cells last); click again: reverse.
_SCRIPT = """
(function(){
  var table=document.getElementById('trials');
  var heads=table.tHead.rows[0].cells;
  function val(row,i){var t=row.cells[i].getAttribute('data-v');return t===null?row.cells[i].textContent:t;}
  function cmp(a,b){
    if(a===''&&b==='')return 0; if(a==='')return 1; if(b==='')return -1;
    var x=Number(a),y=Number(b);
    if(!isNaN(x)&&!isNaN(y))return x-y;
    return a<b?-1:(a>b?1:0);
  }
  for(var i=0;i<heads.length;i++){(function(i){
    heads[i].addEventListener('click',function(){
      var dir=heads[i].getAttribute('data-dir')==='asc'?-1:1;
      for(var k=0;k<heads.length;k++)heads[k].removeAttribute('data-dir');
      heads[i].setAttribute('data-dir',dir===1?'asc':'desc');
      var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var c=cmp(val(a,i),val(b,i));return c===0?0:(val(a,i)===''||val(b,i)===''?c:dir*c);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  })(i);}
})();
"""


def _v(x) -> str:
    """A cell's sort value: numbers as plain decimal text, None as empty."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, float)):
        return repr(float(x)) if isinstance(x, float) else str(x)
    return x if isinstance(x, str) else json.dumps(x)


def _show(c: str, x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        if c == "average_accuracy" or c == "forgetting":
            return f"{100 * x:.2f}%"
        return f"{x:.4g}"
    return str(x)


def report_html(rows, spec, png: bytes, rec_yaml: str, cols, cell, cons_text: str) -> str:
    """The page; ``cell(row, column)`` gives a table value."""
    img = base64.b64encode(png).decode()
    rec_id = None
    for line in rec_yaml.splitlines():
        if "(trial " in line:
            rec_id = line.split("(trial ", 1)[1].split(")", 1)[0]
    head = "".join(f'<th class="{"l" if c in ("id", "status", "reason") else ""}">{html.escape(c)}</th>'
                   for c in cols)
    body = []
    for r in rows:
        cls = r["status"] + (" rec" if r["id"] == rec_id else "")
        tds = "".join(f'<td class="{"l" if c in ("id", "status", "reason") else ""}" '
                      f'data-v="{html.escape(_v(cell(r, c)))}">{html.escape(_show(c, cell(r, c)))}</td>'
                      for c in cols)
        body.append(f'<tr class="{cls}">{tds}</tr>')
    n = {s: sum(r["status"] == s for r in rows) for s in ("ok", "pruned", "failed")}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tinycl sweep report</title>
<link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body>
<h1>tinycl sweep</h1>
<p>{len(rows)} trials: {n['ok']} ran, {n['pruned']} pruned before training, {n['failed']} failed.
Constraints {html.escape(cons_text)}. Objectives: {html.escape(', '.join(spec['objectives']))}.</p>
<h2>Pareto fronts</h2>
<img id="pareto" alt="accuracy against device memory and against energy, Pareto front marked"
 src="data:image/png;base64,{img}">
<h2>Recommended configuration</h2>
<p>The best trial on the Pareto front under the constraints, as a ready <code>tinycl run --config</code> file:</p>
<pre id="recommended">{html.escape(rec_yaml)}</pre>
<h2>Trials</h2>
<p>Click a column header to sort.</p>
<table id="trials"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<script>{_SCRIPT}</script>
</body></html>
"""
