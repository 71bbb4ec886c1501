import json, time, glob, os, collections
from pathlib import Path
files = sorted(glob.glob('/work/shared/data/topic/sib200/*/dev.jsonl'))
rows=[]
for f in files:
    for line in open(f):
        d=json.loads(line); rows.append((Path(f).parent.name, d['text'], d['lang']))
print(len(rows), collections.Counter(r[2] for r in rows))
expected = {'arb_Arab':'ar','arz_Arab':'ar','ary_Arab':'ar','eng_Latn':'en','fra_Latn':'fr','deu_Latn':'de','spa_Latn':'es','rus_Cyrl':'ru','zho_Hans':'zh','tur_Latn':'tr','pes_Arab':'fa','urd_Arab':'ur','hau_Latn':'ha','swh_Latn':'sw'}
import py3langid as langid
from py3langid.langid import LanguageIdentifier, MODEL_FILE
t=time.time(); ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True); print('langid load', time.time()-t)
t=time.time(); res1=[ident.classify(r[1]) for r in rows]; t1=time.time()-t
from lingua import LanguageDetectorBuilder, IsoCode639_1
t=time.time(); det = LanguageDetectorBuilder.from_all_languages().build(); print('lingua build', time.time()-t)
t=time.time(); res2=[]
for r in rows:
    c = det.compute_language_confidence_values(r[1])
    res2.append((c[0].language.iso_code_639_1.name.lower(), c[0].value) if c else ('und',0))
t2=time.time()-t
acc1=collections.defaultdict(list); acc2=collections.defaultdict(list)
for r,a,b in zip(rows,res1,res2):
    acc1[r[0]].append(a[0]==expected[r[0]]); acc2[r[0]].append(b[0]==expected[r[0]])
print('| language | py3langid | lingua |')
for k in expected:
    print(f'| {k} ({expected[k]}) | {sum(acc1[k])/len(acc1[k]):.3f} | {sum(acc2[k])/len(acc2[k]):.3f} |')
n=len(rows)
print('overall', sum(sum(v) for v in acc1.values())/n, sum(sum(v) for v in acc2.values())/n, 'time', t1, t2)
