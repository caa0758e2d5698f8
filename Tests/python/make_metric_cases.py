"""Expected task-metric values for dtrain's TaskMetrics tests, computed by the packages users report
them with (run once; the output is committed as Tests/python/task-metric-cases.json):

    python3 -m venv /tmp/mvenv
    /tmp/mvenv/bin/pip install sacrebleu==2.4.3 rouge-score==0.1.2 transformers==4.46.3
    /tmp/mvenv/bin/python Tests/python/make_metric_cases.py > Tests/python/task-metric-cases.json

- exact match and token F1: SQuAD v2.0's official functions, as transformers 4.46 ships them
  (transformers.data.metrics.squad_metrics.compute_exact / compute_f1);
- ROUGE-L F: rouge-score's RougeScorer(["rougeL"], use_stemmer=False);
- 13a tokens and corpus BLEU: sacreBLEU's Tokenizer13a and BLEU() with its defaults.
"""
import json

import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from transformers.data.metrics.squad_metrics import compute_exact, compute_f1

PAIRS = [
    ("Paris", "Paris"),
    ("paris.", "Paris"),
    ("The Eiffel Tower", "Eiffel tower"),
    ("an apple a day", "the apple, a day!"),
    ("It is 21 degrees.", "21 degrees"),
    ("", ""),
    ("", "something"),
    ("   spaced   out\ttext\n", "spaced out text"),
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("3.14 is pi, roughly", "pi is roughly 3.14"),
    ("1,000,000 people (approx.)", "about 1,000,000 people"),
    ("state-of-the-art models", "state of the art models"),
    ("2019-2020 season", "the 2019 - 2020 season"),
    ("Tom &amp; Jerry &lt;3", "Tom & Jerry <3"),
    ("Café crème brûlée", "cafe creme brulee"),
    ("naïve résumé façade", "naïve résumé façade"),
    ("Über straße", "uber strasse"),
    ("日本語のテキスト", "日本語 の テキスト"),
    ("emoji 🦊 fox", "fox 🦊"),
    ("don't stop", "do not stop"),
    ("U.S.A. and U.K.", "USA and UK"),
    ("a a a the the an", ""),
    ("hello, world! hello again.", "hello world, hello"),
    ("$5.00 or €4,50?", "5 dollars"),
    ("e-mail: someone@example.com", "someone@example.com email"),
    ("x" * 3 + " " + "y" * 3, "xxx yyy zzz"),
    ("New York City is big", "New York is a big city"),
    ("The answer is B) 42", "42"),
    ("quote \"this\" and 'that'", "quote this and that"),
    ("under_score and hy-phen", "under score and hyphen"),
]

CORPORA = [
    list(range(len(PAIRS))),
    [0, 1, 2, 3],
    [8, 9, 10, 11, 12, 13],
    [5, 6],
    [2],
    [8],
    [26, 27, 28, 29, 8, 22],
]


def main():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tokenizer = Tokenizer13a()
    pairs = []
    for prediction, reference in PAIRS:
        pairs.append({
            "prediction": prediction,
            "reference": reference,
            "exact_match": float(compute_exact(reference, prediction)),
            "token_f1": float(compute_f1(reference, prediction)),
            "rouge_l": scorer.score(reference, prediction)["rougeL"].fmeasure,
            "tokens_13a": [tokenizer(prediction.rstrip()), tokenizer(reference.rstrip())],
        })
    corpora = []
    for indices in CORPORA:
        predictions = [PAIRS[i][0] for i in indices]
        references = [PAIRS[i][1] for i in indices]
        bleu = sacrebleu.metrics.BLEU().corpus_score(predictions, [references])
        corpora.append({"indices": indices, "bleu": bleu.score})
    print(json.dumps({"generator": "Tests/python/make_metric_cases.py",
                      "packages": {"sacrebleu": sacrebleu.__version__, "rouge-score": "0.1.2", "transformers": "4.46.3"},
                      "pairs": pairs, "corpora": corpora}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
