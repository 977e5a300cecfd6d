"""Contrast sets for training the text model: the same claim asserted, denied and quoted.

None of the labelled sets holds negated hate or counter-speech, so a model trained on them
scores "X are not vermin" and "calling X vermin is bigotry" like "X are vermin". An earlier
augmentation added only the benign side (negated and condemned copies of hate, label 0) and
the model learned that "not" means benign ("X are not human" fell to 0.03). Here every cue
appears on both sides in equal measure:

- **negation**: a derogatory predicate asserted is hate, denied is not; a dignity predicate
  ("human", "deserve respect") asserted is benign, denied is hate;
- **framing**: a hateful statement inside a rejecting or reporting frame ("it is bigoted to
  claim that S") is not hate, inside an endorsing frame ("I agree, S") it is; endorsing
  frames carry negation words of their own ("I'm not racist, but S") and also wrap neutral
  statements (label 0), so neither a frame's words nor "not" decide the label alone.

Lexicons, predicates and frames are written here (none from any test suite); each is put in
train or dev by a seeded hash, so the dev half measures unseen predicates and frames. The
statements framed are the training split's own hateful sentences (ToxiGen, COLD).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ContrastText", "chinese_contrast", "english_contrast"]

NA = math.nan
DEV_FRACTION = 0.3


@dataclass(frozen=True)
class ContrastText:
    """One generated text: ``hate`` 0/1 and the group it names (for ``sexism``)."""

    text: str
    hate: float
    split: str
    kind: str  # "assert", "negate", "reject", "endorse", "report", "reference"
    about_women: bool = False
    insult: bool = False  # aimed at the reader ("you are ..."): offensive, not hate


def _bucket(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"contrast\x00{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split(seed: int, key: str) -> str:
    return "dev" if _bucket(seed, key) < DEV_FRACTION else "train"


# --- English -------------------------------------------------------------------------------

EN_GROUPS = (
    "muslims", "jews", "gay people", "lesbians", "trans people", "bisexual people",
    "black people", "asians", "chinese people", "mexicans", "immigrants", "arabs",
    "native americans", "christians", "women", "disabled people", "refugees", "deaf people",
    "indians", "africans", "hindus", "roma", "latinos", "blind people", "autistic people",
    "old people", "feminists", "migrants",
)  # fmt: skip

# Asserted of a group: hate. Denied: not hate.
EN_DEROGATORY = (
    "animals", "vermin", "parasites", "subhuman", "a plague", "a cancer on society",
    "criminals", "rapists", "terrorists", "thieves", "dirty", "disgusting", "filthy",
    "stupid", "lazy", "violent", "evil", "inferior", "worthless", "a burden on everyone",
    "a danger to children", "diseased", "savages", "liars", "freaks", "mentally ill",
    "a waste of space", "less than human", "born criminals", "genetically inferior",
    "cockroaches", "a disgrace", "too dumb to vote", "ruining this country",
)  # fmt: skip
# Asserted of a group: benign. Denied: hate (HateCheck's "negated positive statement").
EN_DIGNITY = (
    "human", "human beings", "equal to everyone else", "welcome here",
    "worthy of respect", "valued members of society", "as smart as anyone",
    "good parents", "good neighbours", "trustworthy", "real citizens",
    "part of our community", "safe to be around", "capable of thinking for themselves",
    "fit to hold public office", "normal people", "decent people", "real people",
    "hard working", "honest", "full members of society", "our equals",
)  # fmt: skip
EN_HATEFUL_VERBS = (
    ("should be deported", "should not be deported"),
    ("should be locked up", "should not be locked up"),
    ("should be banned from this country", "should not be banned from this country"),
    ("should be wiped out", "should never be wiped out"),
    ("ruin every place they move to", "do not ruin the places they move to"),
    ("spread disease wherever they go", "do not spread disease"),
    ("should be kept away from our kids", "do not need to be kept away from kids"),
    ("are destroying our culture", "are not destroying our culture"),
    ("should be sterilised", "should never be sterilised"),
    ("need to be removed from society", "do not need to be removed from society"),
)
EN_DIGNITY_VERBS = (
    ("deserve respect", "do not deserve respect"),
    ("belong in this country", "do not belong in this country"),
    ("should have equal rights", "should not have equal rights"),
    ("should be allowed to vote", "should not be allowed to vote"),
    ("deserve to live", "do not deserve to live"),
    ("can be trusted", "cannot be trusted"),
    ("should be allowed to teach", "should never be allowed to teach"),
    ("should be treated equally", "should not be treated equally"),
    ("deserve the same jobs as anyone", "do not deserve jobs"),
    ("have a place in our society", "have no place in our society"),
    ("should be allowed to adopt", "should never be allowed to adopt"),
)
EN_FIRST_PERSON = (
    # (asserted, denied, hate when asserted)
    ("i hate {g}.", "i don't hate {g}.", 1.0),
    ("i despise {g}.", "i do not despise {g}.", 1.0),
    ("i can't stand {g}.", "i have nothing against {g}.", 1.0),
    ("i want {g} gone from my town.", "i don't want {g} gone from my town.", 1.0),
    ("honestly, i wish {g} would disappear.", "i never wished {g} would disappear.", 1.0),
    ("i respect {g}.", "i don't respect {g}.", 0.0),
    ("i trust {g}.", "i would never trust {g}.", 0.0),
    ("i'd love {g} as neighbours.", "i don't want {g} as neighbours.", 0.0),
    ("i'm happy to work with {g}.", "i refuse to work with {g}.", 0.0),
    ("i would hire {g}.", "i would never hire {g}.", 0.0),
)
# Said to the reader: an insult (offensive, not hate) when derogatory.
EN_INSULTS = (
    "an idiot", "a moron", "pathetic", "a loser", "a waste of oxygen", "brainless", "ugly",
    "an embarrassment", "a clown", "useless", "a joke", "trash", "stupid", "worthless",
    "disgusting", "a failure", "dumb as a rock", "a pig",
)  # fmt: skip
EN_COMPLIMENTS = (
    "smart", "a good person", "welcome here", "worth listening to", "talented", "kind",
    "a great friend", "right about this", "good at your job", "brave", "funny",
)  # fmt: skip
EN_YOU_ASSERT = ("you are {p}.", "you're {p}.", "honestly, you are {p}.", "you are so {p}.",
                 "you really are {p}.")  # fmt: skip
EN_YOU_NEGATE = ("you are not {p}.", "you aren't {p}.", "you're not {p}.",
                 "you are not {p} at all.", "no, you are not {p}.")  # fmt: skip
# Counter-speech that names the slur rather than quoting a sentence, and its endorsing twin.
EN_REFERENCE = ("calling {g} {p} is {v}.", "describing {g} as {p} is {v}.",
                "to say {g} are {p} is {v}.", "claiming that {g} are {p} is {v}.",
                "treating {g} like {p} is {v}.")  # fmt: skip
EN_CONDEMN = ("bigoted", "hateful", "racist", "cruel", "unacceptable", "ignorant", "wrong",
              "dehumanising", "shameful", "vile", "prejudice, nothing else")  # fmt: skip
EN_APPROVE = ("just honest", "simply accurate", "the plain truth", "fair", "not hate, it is a fact",
              "long overdue", "what everyone thinks", "right", "common sense")  # fmt: skip
EN_NEGATIONS = (
    "are not",
    "aren't",
    "are not at all",
    "are never",
    "are in no way",
)
EN_ASSERT_FRAMES = ("{g} are {p}.", "all {g} are {p}.", "honestly, {g} are {p}.",
                    "i think {g} are {p}.", "{g} are {p}, everyone knows it.",
                    "most {g} are {p}.", "{g} really are {p}.")  # fmt: skip
EN_NEGATE_FRAMES = ("{g} {neg} {p}.", "no, {g} {neg} {p}.", "i think {g} {neg} {p}.",
                    "{g} {neg} {p}, whatever some say.", "most {g} {neg} {p}.")  # fmt: skip

# Frames around a hateful statement {s} (lower case, no final full stop).
EN_REJECT = (
    "saying that {s} is hateful nonsense.",
    "it is bigoted to claim that {s}.",
    "the idea that {s} is a racist myth.",
    "i am tired of hearing that {s}.",
    "anyone who believes {s} needs to educate themselves.",
    "my uncle said '{s}' at dinner and everyone walked out.",
    "how can anyone still think that {s}? that is prejudice.",
    '"{s}" - posts like this should be reported.',
    "it's not true that {s}.",
    "i used to think {s}, but i was wrong.",
    "the claim that {s} has been debunked again and again.",
    "comments claiming {s} are hate speech and get removed here.",
    "we need to stand up to anyone who says {s}.",
    "there is no evidence at all that {s}.",
    "i reported a comment that said {s}.",
    "teaching kids that {s} is how hatred spreads.",
    "i strongly disagree with anyone saying {s}.",
    "it is false and cruel to say {s}.",
    "repeating that {s} only fuels discrimination.",
    "a stranger shouted '{s}' at my friend. nobody deserves that.",
    "if your argument is '{s}', you have no argument.",
    "'{s}'? what an ugly, ignorant thing to post.",
    "i agree with you that it is hateful to say {s}.",
    "honestly, saying {s} is just ignorant.",
    "let's be honest, anyone claiming {s} is a bigot.",
    "facts matter: it is simply false that {s}.",
    "everyone knows it is a lie that {s}.",
)
EN_REPORT = (
    "the study collected posts such as '{s}' to measure online hate.",
    "the leaflet, which read '{s}', was condemned by the council.",
    "moderators removed thousands of messages like '{s}' last year.",
    "the court heard that the defendant had written '{s}'.",
    "researchers found that slogans like '{s}' spread fastest at night.",
    "the museum exhibit shows propaganda posters that said '{s}'.",
)
EN_ENDORSE = (
    "i agree, {s}.",
    "finally someone said it: {s}.",
    "facts: {s}.",
    "it is obvious that {s}.",
    "everyone knows {s}.",
    "my grandfather always said '{s}' and he was right.",
    "let's be honest, {s}.",
    "i don't care what anyone says, {s}.",
    "nobody wants to admit it but {s}.",
    "i'm not racist, but {s}.",
    "they won't tell you this, but {s}.",
    "i will never stop saying it: {s}.",
    "the truth is simple: {s}.",
    "i'm not afraid to say {s}.",
    "no one can convince me otherwise: {s}.",
    "'{s}' - couldn't have said it better.",
    "{s}, and it's wrong to deny it.",
    "it is wrong to pretend otherwise: {s}.",
    "calling it bigotry won't change the facts: {s}.",
    "people call it hate speech, but {s}.",
    "i'll be called a bigot for this, but {s}.",
    "report me if you want, but {s}.",
    "the media calls it a myth, but {s}.",
    "it's not prejudice if it's true: {s}.",
)

_EN_SENTENCE_END = re.compile(r"[.!?]+$")


def _clause(text: str) -> str:
    return _EN_SENTENCE_END.sub("", text.strip()).strip().lower()


def _fill(frame: str, **parts: str) -> str:
    out = frame.format(**parts)
    return out[0].upper() + out[1:] if out else out


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def english_contrast(
    hateful: Sequence[tuple[str, str]],
    neutral: Sequence[tuple[str, str]],
    seed: int,
    *,
    per_predicate: int = 6,
) -> list[ContrastText]:
    """Contrast texts. ``hateful``/``neutral``: (sentence, split) from the labelled sets.

    A framed sentence keeps its own split; a generated one takes its predicate's and its
    frame's (a dev text has both unseen in training, a mixed pair is dropped).
    """
    rng = np.random.default_rng(seed)
    out: list[ContrastText] = []

    def add(text: str, hate: float, split: str, kind: str, group: str = "") -> None:
        out.append(ContrastText(text, hate, split, kind, about_women=group == "women"))

    def frames_split(kind: str, frames: Sequence[str]) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {"train": [], "dev": []}
        for f in frames:
            by[_split(seed, f"{kind}:{f}")].append(f)
        return by

    assert_f = frames_split("assert", EN_ASSERT_FRAMES)
    negate_f = frames_split("negate", EN_NEGATE_FRAMES)
    # Adjectival and noun predicates: "are P" / "are not P".
    for preds, hate_if_asserted in ((EN_DEROGATORY, 1.0), (EN_DIGNITY, 0.0)):
        for p in preds:
            split = _split(seed, f"pred:{p}")
            for _ in range(per_predicate):
                g = _pick(rng, EN_GROUPS)
                add(_fill(_pick(rng, assert_f[split] or EN_ASSERT_FRAMES), g=g, p=p),
                    hate_if_asserted, split, "assert", g)  # fmt: skip
                g = _pick(rng, EN_GROUPS)
                text = _fill(
                    _pick(rng, negate_f[split] or EN_NEGATE_FRAMES),
                    g=g, neg=_pick(rng, EN_NEGATIONS), p=p,
                )  # fmt: skip
                add(text, 1.0 - hate_if_asserted, split, "negate", g)
    # Verb predicates with their own negated forms.
    for pairs, hate_if_asserted in ((EN_HATEFUL_VERBS, 1.0), (EN_DIGNITY_VERBS, 0.0)):
        for positive, negated in pairs:
            split = _split(seed, f"pred:{positive}")
            for _ in range(per_predicate):
                g = _pick(rng, EN_GROUPS)
                add(_fill("{g} {v}.", g=g, v=positive), hate_if_asserted, split, "assert", g)
                g = _pick(rng, EN_GROUPS)
                add(_fill("{g} {v}.", g=g, v=negated), 1.0 - hate_if_asserted, split,
                    "negate", g)  # fmt: skip
    for positive, negated, hate_if_asserted in EN_FIRST_PERSON:
        split = _split(seed, f"pred:{positive}")
        for _ in range(per_predicate):
            g = _pick(rng, EN_GROUPS)
            add(_fill(positive, g=g), hate_if_asserted, split, "assert", g)
            g = _pick(rng, EN_GROUPS)
            add(_fill(negated, g=g), 1.0 - hate_if_asserted, split, "negate", g)
    you_assert = frames_split("you-assert", EN_YOU_ASSERT)
    you_negate = frames_split("you-negate", EN_YOU_NEGATE)
    for words, insult_if_asserted in ((EN_INSULTS, True), (EN_COMPLIMENTS, False)):
        for p in words:
            split = _split(seed, f"pred:{p}")
            for frames, insult, kind in (
                (you_assert, insult_if_asserted, "assert"),
                (you_negate, not insult_if_asserted, "negate"),
            ):
                for _ in range(per_predicate):
                    text = _fill(_pick(rng, frames[split] or frames["train"]), p=p)
                    out.append(ContrastText(text, 0.0, split, kind, insult=insult))
    reference = frames_split("reference", EN_REFERENCE)
    for p in EN_DEROGATORY:
        split = _split(seed, f"pred:{p}")
        for verdicts, hate in ((EN_CONDEMN, 0.0), (EN_APPROVE, 1.0)):
            for _ in range(per_predicate // 2):
                g = _pick(rng, EN_GROUPS)
                frame = _pick(rng, reference[split] or EN_REFERENCE)
                add(_fill(frame, g=g, p=p, v=_pick(rng, verdicts)), hate, split, "reference", g)
    # Frames around the labelled sets' own statements.
    reject = frames_split("reject", EN_REJECT + EN_REPORT)
    endorse = frames_split("endorse", EN_ENDORSE)
    for sentence, split in hateful:
        s = _clause(sentence)
        if not s or len(s) > 160:
            continue
        women = "women" in s or "woman" in s
        frame = _pick(rng, reject[split])
        kind = "report" if frame in EN_REPORT else "reject"
        out.append(ContrastText(_fill(frame, s=s), 0.0, split, kind, women))
        out.append(ContrastText(_fill(_pick(rng, endorse[split]), s=s), 1.0, split, "endorse",
                                women))  # fmt: skip
    for sentence, split in neutral:
        s = _clause(sentence)
        if s and len(s) <= 160:
            out.append(ContrastText(_fill(_pick(rng, endorse[split]), s=s), 0.0, split,
                                    "endorse"))  # fmt: skip
    return out


# --- Chinese -------------------------------------------------------------------------------

ZH_GROUPS = (
    "黑人", "白人", "同性恋", "女人", "女生", "男人", "外地人", "河南人", "东北人", "农村人",
    "穆斯林", "残疾人", "外国人", "日本人", "上海人", "新疆人", "农民工", "老年人", "胖子",
    "单亲妈妈", "基督徒", "离婚的女人", "广东人", "北方人", "南方人",
)  # fmt: skip
ZH_DEROGATORY = (
    "垃圾", "小偷", "骗子", "畜生", "废物", "低等人", "寄生虫", "蛀虫", "罪犯", "肮脏的",
    "懒惰的", "愚蠢的", "恶心的", "社会的毒瘤", "劣等民族", "猴子", "病毒", "害虫", "强奸犯",
    "人渣", "智障", "祸害", "累赘", "野蛮人",
)  # fmt: skip
ZH_DIGNITY = (
    "人", "值得尊重的", "我们的同胞", "平等的", "好人", "正常人", "可以信任的", "聪明的",
    "善良的", "社会的一份子", "勤劳的", "诚实的", "好邻居", "称职的父母",
)  # fmt: skip
ZH_ASSERT = (
    "{g}都是{p}",
    "{g}就是{p}",
    "我觉得{g}都是{p}",
    "说实话，{g}就是{p}",
    "{g}全是{p}",
)
ZH_NEGATE_DEROGATORY = ("{g}不是{p}", "{g}并不是{p}", "{g}都不是{p}", "{g}根本不是{p}",
                        "我觉得{g}不是{p}", "{g}绝对不是{p}")  # fmt: skip
ZH_ASSERT_DIGNITY = ("{g}也是{p}", "{g}都是{p}", "{g}当然是{p}", "我觉得{g}是{p}")
ZH_NEGATE_DIGNITY = ("{g}根本不是{p}", "{g}不是{p}", "{g}算不上{p}", "{g}从来都不是{p}",
                     "{g}不配算{p}")  # fmt: skip
ZH_VERBS = (
    # (asserted, denied, hate when asserted)
    ("{g}应该滚出去", "{g}不应该被赶走", 1.0),
    ("{g}都该被关起来", "{g}不该被关起来", 1.0),
    ("{g}应该被赶出这个城市", "{g}不应该被赶出这个城市", 1.0),
    ("{g}只会给社会添乱", "{g}没有给社会添乱", 1.0),
    ("{g}应该被消灭", "{g}不应该被消灭", 1.0),
    ("{g}值得尊重", "{g}不值得尊重", 0.0),
    ("{g}应该有平等的权利", "{g}不配有平等的权利", 0.0),
    ("{g}可以被信任", "{g}不能被信任", 0.0),
    ("{g}配得上这份工作", "{g}配不上这份工作", 0.0),
    ("{g}有资格当老师", "{g}没资格当老师", 0.0),
    ("我讨厌{g}", "我不讨厌{g}", 1.0),
    ("我受不了{g}", "我对{g}没有偏见", 1.0),
    ("我恨死{g}了", "我从来没恨过{g}", 1.0),
    ("我尊重{g}", "我看不起{g}", 0.0),
    ("我愿意和{g}做邻居", "我不想和{g}做邻居", 0.0),
    ("我会雇用{g}", "我绝不会雇用{g}", 0.0),
)
ZH_REJECT = (
    "说{s}的人，其实是在搞歧视。",
    "“{s}”这种说法是赤裸裸的偏见。",
    "我不同意“{s}”的说法。",
    "看到评论区有人写“{s}”，已经向平台反映了。",
    "认为{s}，这本身就是一种歧视。",
    "请不要再说“{s}”这样的话，很伤人。",
    "{s}？这种言论根本没有根据。",
    "网上流传的“{s}”纯属谣言。",
    "我以前也觉得{s}，后来发现是我错了。",
    "动不动就说“{s}”，这是地图炮。",
    "听到有人说“{s}”，我真替他感到羞耻。",
    "“{s}”这句话是典型的刻板印象。",
    "用“{s}”来攻击别人是不对的。",
    "他骂“{s}”，被大家批评了。",
    "说实话，“{s}”这种话就是歧视。",
    "我同意楼上，说{s}的人太没素质了。",
    "大家心里都清楚，{s}这种说法站不住脚。",
)
ZH_REPORT = (
    "研究人员收集了“{s}”这类帖子来分析网络仇恨。",
    "报道称，有人在墙上写了“{s}”，警方已介入。",
    "平台去年删除了大量类似“{s}”的评论。",
)
ZH_ENDORSE = (
    "说得对，{s}。",
    "我同意，{s}。",
    "{s}，这是事实。",
    "不是我歧视，{s}。",
    "大家心里都清楚，{s}。",
    "我就直说了，{s}。",
    "谁不知道{s}。",
    "我爸说“{s}”，一点没错。",
    "别不承认了，{s}。",
    "不怕得罪人，{s}。",
    "“{s}”，太真实了。",
    "说我有偏见也无所谓，{s}。",
    "就算被说是地图炮，我也要说：{s}。",
    "举报我也没用，{s}。",
    "别扣歧视的帽子，{s}。",
)
_ZH_END = re.compile(r"[。！？!?.…~～]+$")


def chinese_contrast(
    hateful: Sequence[tuple[str, str]],
    neutral: Sequence[tuple[str, str]],
    seed: int,
    *,
    per_predicate: int = 6,
    max_framed: int = 1500,
) -> list[ContrastText]:
    """The Chinese counterpart of :func:`english_contrast` (COLD's offensive posts framed)."""
    rng = np.random.default_rng(seed + 1)
    out: list[ContrastText] = []

    def add(text: str, hate: float, split: str, kind: str, group: str = "") -> None:
        women = group in ("女人", "女生", "单亲妈妈", "离婚的女人")
        out.append(ContrastText(text, hate, split, kind, about_women=women))

    for preds, asserted, negated, hate_if_asserted in (
        (ZH_DEROGATORY, ZH_ASSERT, ZH_NEGATE_DEROGATORY, 1.0),
        (ZH_DIGNITY, ZH_ASSERT_DIGNITY, ZH_NEGATE_DIGNITY, 0.0),
    ):
        for p in preds:
            split = _split(seed, f"zh-pred:{p}")
            for _ in range(per_predicate):
                g = _pick(rng, ZH_GROUPS)
                add(_pick(rng, asserted).format(g=g, p=p), hate_if_asserted, split, "assert", g)
                g = _pick(rng, ZH_GROUPS)
                add(_pick(rng, negated).format(g=g, p=p), 1.0 - hate_if_asserted, split,
                    "negate", g)  # fmt: skip
    for positive, negative, hate_if_asserted in ZH_VERBS:
        split = _split(seed, f"zh-pred:{positive}")
        for _ in range(per_predicate):
            g = _pick(rng, ZH_GROUPS)
            add(positive.format(g=g), hate_if_asserted, split, "assert", g)
            g = _pick(rng, ZH_GROUPS)
            add(negative.format(g=g), 1.0 - hate_if_asserted, split, "negate", g)

    def by_split(kind: str, frames: Sequence[str]) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {"train": [], "dev": []}
        for f in frames:
            by[_split(seed, f"zh-{kind}:{f}")].append(f)
        return by

    reject = by_split("reject", ZH_REJECT + ZH_REPORT)
    endorse = by_split("endorse", ZH_ENDORSE)
    short_hate = [(s, sp) for s, sp in hateful if 4 <= len(_ZH_END.sub("", s)) <= 60]
    short_neutral = [(s, sp) for s, sp in neutral if 4 <= len(_ZH_END.sub("", s)) <= 60]
    pick_hate = rng.permutation(len(short_hate))[:max_framed]
    pick_neutral = rng.permutation(len(short_neutral))[: max_framed // 2]
    for i in sorted(pick_hate.tolist()):
        sentence, split = short_hate[i]
        s = _ZH_END.sub("", sentence.strip())
        frame = _pick(rng, reject[split])
        kind = "report" if frame in ZH_REPORT else "reject"
        out.append(ContrastText(frame.format(s=s), 0.0, split, kind))
        out.append(ContrastText(_pick(rng, endorse[split]).format(s=s), 1.0, split, "endorse"))
    for i in sorted(pick_neutral.tolist()):
        sentence, split = short_neutral[i]
        s = _ZH_END.sub("", sentence.strip())
        out.append(ContrastText(_pick(rng, endorse[split]).format(s=s), 0.0, split, "endorse"))
    return out
