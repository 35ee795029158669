"""Build a prompt that is guaranteed to fit the model's window: :class:`PromptBuilder`.

The messages it returns (OpenAI chat format, plain dicts), in order::

    system    the system prompt, then the retrieved context appended to it under the
              context template ("Context:" and the documents, separated by a rule);
              with context but no system prompt, the context alone is the system message
    examples  each example's messages (a (user, assistant) pair becomes two messages)
    history   the newest part of the conversation that fits (tool calls kept with results)
    user      the new user message

Context joins the system message because every provider accepts one there (Anthropic
takes a single system prompt) and a stable prefix is what provider prompt caches reuse.

``max_tokens`` is at most the model's context window: a larger one is refused, as
:func:`~tokenbudget_core.fitting.fit_messages` refuses it (a prompt built to it would not fit).

How the budget is spent: system prompt and user input are counted exactly and must fit
beside the reserved output (else :class:`~tokenbudget_core.errors.ContextOverflowError`,
or with ``on_overflow="truncate"`` the user input is cut, keeping its end; a cut that would
leave none of its text, or only blanks, is an overflow too). The rest is
split by :func:`~tokenbudget_core.allocation.allocate_budget` shares (default: half to
context, the rest to history, no share for examples) and
:meth:`~tokenbudget_core.allocation.Allocation.fill` passes what a part does not need to
the parts that need more (to parts without a share only once the others are satisfied:
by default examples are dropped before history is cut). Then each part is cut to its
budget: every context document gets an equal share (short ones stay whole) and is cut by
``context_strategy``, the last (lowest-ranked) documents going when shares would get
tiny; examples are dropped by ``example_policy``; history is trimmed by
:func:`~tokenbudget_core.fitting.fit_messages` (newest kept, tool calls with their
results). What a cut leaves unused flows on: context, history, examples, then history and
context again. Last, ``count_messages`` checks the result; if a seam tokenised differently
or the counter's request count differs from its message counts, history is trimmed
further, then context, then examples (then, with ``on_overflow="truncate"``, the user
input). The result always fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import accumulate
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, get_args

from .allocation import Allocation, allocate_budget
from .conversation import unit_start
from .counting import TokenCounter, resolve_counter
from .errors import ContextOverflowError, InvalidInputError, InvalidMessageError
from .fitting import OnOverflow, check_fits_model, fit_messages, has_visible_text
from .messages import MessageLike, to_message, to_openai_dict
from .openai_counting import TiktokenCounter
from .truncation import Strategy, truncate_text

__all__ = [
    "DEFAULT_CONTEXT_TEMPLATE",
    "DEFAULT_SHARES",
    "DOCUMENT_SEPARATOR",
    "BuiltPrompt",
    "Example",
    "ExamplePolicy",
    "PromptBuilder",
]

ExamplePolicy: TypeAlias = Literal["drop_oldest", "drop_newest"]
Example: TypeAlias = tuple[str, str] | Sequence[MessageLike]
"""A few-shot example: a ``(user, assistant)`` pair of strings, or a list of messages."""

DEFAULT_SHARES: Mapping[str, int | float] = MappingProxyType({"context": 0.5})
"""Context gets half of what system, user and output leave; history the rest; examples none."""
DEFAULT_CONTEXT_TEMPLATE = "Context:\n{documents}"
"""How context is rendered below the system prompt; ``{documents}`` becomes the documents."""
DOCUMENT_SEPARATOR = "\n\n---\n\n"
"""What separates two context documents."""

_FLEX = ("context", "history", "examples")  # the order parts are cut in; unused tokens flow along it
_MIN_DOCUMENT_TOKENS = 16  # below this share a document is dropped rather than cut to a stub
_WHAT = "system prompt and user input"
_OVERFLOW_FIX = (
    "raise max_tokens, reserve fewer output tokens, shorten the system prompt, or pass "
    "on_overflow='truncate' to cut the user input"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltPrompt:
    """The messages to send and how the budget was spent. Made by :meth:`PromptBuilder.build`.

    Example:
        >>> prompt = PromptBuilder("gpt-4o", max_tokens=2_000).build(system="Be brief.", user="Hi")
        >>> (prompt.tokens <= prompt.budget, prompt.messages[-1])
        (True, {'role': 'user', 'content': 'Hi'})
    """

    messages: list[dict[str, Any]]
    """The prompt in OpenAI chat format: system, examples, history, user."""
    tokens: int
    """Prompt tokens of :attr:`messages` (the counter's ``count_messages``); at most :attr:`budget`."""
    budget: int
    """Tokens available for the prompt: ``max_tokens - reserve_output``."""
    allocation: Allocation
    """The per-part budgets after what parts did not need was passed on. Cutting whole
    messages and examples can leave tokens over, which go on to history and context, so a
    cut part may use a little more than its budget here."""
    used: dict[str, int]
    """Tokens per part (``system``, ``examples``, ``context``, ``history``, ``user``). Message
    framing is in each part; the reply priming is in ``user``; context is what it adds to the
    system message. For OpenAI models they sum to :attr:`tokens`."""
    exact: bool
    """False when :attr:`tokens` is an estimate (e.g. Claude offline)."""
    documents_truncated: int = 0
    """Context documents that were cut."""
    documents_dropped: int = 0
    """Context documents left out (the last ones)."""
    examples_dropped: int = 0
    """Examples left out."""
    history_dropped: int = 0
    """History messages left out (the oldest)."""
    user_truncated: bool = False
    """Whether the user input was cut (``on_overflow="truncate"``)."""

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain data, for JSON output."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(allocation=self.allocation.as_dict(), used=dict(self.used))
        return out


class PromptBuilder:
    """Assembles system prompt, examples, retrieved context, history and user input within budget.

    Args:
        model: Model name or :class:`~tokenbudget_core.counting.TokenCounter`.
        max_tokens: The window, at most the model's context window (a larger one is refused:
            the prompt built to it would not fit the model); default: the model's context window.
        reserve_output: Tokens kept free for the reply; default: the model's max output tokens
            when ``max_tokens`` is not given, else 0.
        shares: Shares of ``examples``, ``context`` and ``history`` (int tokens or float
            fractions of what system, user and output leave; see
            :func:`~tokenbudget_core.allocation.allocate_budget`). History takes what the
            fractions leave. Default: :data:`DEFAULT_SHARES`.
        context_strategy: How documents are cut: ``smart``, ``keep_start``, ``keep_end`` or
            ``keep_both`` (see :func:`~tokenbudget_core.truncation.truncate_text`).
        context_template: How context is rendered; must contain ``{documents}``.
        document_separator: What goes between two documents.
        example_policy: ``drop_oldest`` (the first examples go first) or ``drop_newest``.
        on_overflow: When system prompt and user input alone do not fit: ``raise``, or
            ``truncate`` the user input (keeping its end, where the question usually is; a cut
            that would leave no visible text of it raises as ``raise`` does).

    Raises:
        InvalidInputError: A bad argument, named (e.g. ``shares['system']``), or a ``max_tokens``
            above the model's context window.
        UnknownModelError: The model name is unknown.

    Example:
        >>> builder = PromptBuilder("gpt-4o", max_tokens=4_000, reserve_output=500)
        >>> prompt = builder.build(
        ...     system="Answer from the context.",
        ...     context=["Paris is the capital of France. " * 1_000, "Lyon is a city in France."],
        ...     history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        ...     user="What is the capital of France?",
        ... )
        >>> (prompt.tokens <= 3_500, prompt.documents_truncated, len(prompt.messages))
        (True, 1, 4)
    """

    def __init__(
        self,
        model: str | TokenCounter = "gpt-4o",
        *,
        max_tokens: int | None = None,
        reserve_output: int | None = None,
        shares: Mapping[str, int | float] | None = None,
        context_strategy: Strategy = "smart",
        context_template: str = DEFAULT_CONTEXT_TEMPLATE,
        document_separator: str = DOCUMENT_SEPARATOR,
        example_policy: ExamplePolicy = "drop_oldest",
        on_overflow: OnOverflow = "raise",
    ) -> None:
        self.counter = resolve_counter(model)
        if shares is not None and not isinstance(shares, Mapping):
            raise InvalidInputError("shares", "must be a dict of part name to int or float", value=shares)
        self.shares = dict(DEFAULT_SHARES if shares is None else shares)
        if exact_parts := sorted(set(self.shares) & {"system", "user", "output"}):
            raise InvalidInputError(
                f"shares[{exact_parts[0]!r}]",
                "system prompt, user input and output are not shared out",
                fix="system and user are counted exactly; set the output with reserve_output=...",
            )
        if max_tokens is None and self.counter.model.context_window is None:
            raise InvalidInputError("max_tokens", "the model's context window is unknown", fix="pass it")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise InvalidInputError(
                "max_tokens", "must be a positive integer", value=max_tokens, fix="e.g. 8_000"
            )
        if max_tokens is not None:
            # As every fitting entry point does: a larger budget builds prompts the model refuses
            # (and the history fit inside would name a max_tokens the caller never passed).
            check_fits_model(self.counter, max_tokens)
        # Validates the shares; takes the model's window and max output when max_tokens is None.
        total = self.counter if max_tokens is None else max_tokens
        base = allocate_budget(total, reserve_output=reserve_output, shares=self.shares)
        self.max_tokens, self.reserve_output = base.total, base.output
        if base.prompt <= 0:
            raise InvalidInputError(
                "reserve_output",
                f"leaves no room for the prompt ({base.total} - {base.output})",
                fix="lower reserve_output or raise max_tokens",
            )
        for field, value, allowed in (
            ("context_strategy", context_strategy, get_args(Strategy)),
            ("example_policy", example_policy, get_args(ExamplePolicy)),
            ("on_overflow", on_overflow, get_args(OnOverflow)),
        ):
            if value not in allowed:
                raise InvalidInputError(field, f"unknown value {value!r}", fix=f"use one of {list(allowed)}")
        if not isinstance(context_template, str) or "{documents}" not in context_template:
            raise InvalidInputError(
                "context_template",
                "must be a string containing '{documents}'",
                fix='e.g. "Context:\\n{documents}"',
            )
        if not isinstance(document_separator, str):
            raise InvalidInputError("document_separator", "must be a string", fix='e.g. "\\n\\n"')
        self.context_strategy: Strategy = context_strategy
        self.example_policy: ExamplePolicy = example_policy
        self.on_overflow: OnOverflow = on_overflow
        self.context_template, self.document_separator = context_template, document_separator

    @property
    def budget(self) -> int:
        """Tokens available for the prompt: ``max_tokens - reserve_output``."""
        return self.max_tokens - self.reserve_output

    def build(
        self,
        *,
        system: str | None = None,
        examples: Sequence[Example] = (),
        context: Sequence[str] = (),
        history: Sequence[MessageLike] = (),
        user: str,
    ) -> BuiltPrompt:
        """The messages for one call, guaranteed to fit (see the module doc for the rules).

        Args:
            system: The system prompt (kept whole), or ``None`` for none.
            examples: Few-shot examples, oldest first: ``(user, assistant)`` pairs or message lists.
            context: Retrieved documents, most relevant first.
            history: Earlier messages (dicts or :class:`~tokenbudget_core.messages.Message`),
                oldest first, without system messages.
            user: The new user input.

        Returns:
            A :class:`BuiltPrompt` whose ``tokens`` never exceed ``budget``.

        Raises:
            ContextOverflowError: System prompt and user input alone exceed the budget
                (``limit`` and ``required`` say by how much).
            InvalidInputError: A malformed argument, named (``history[3].role``, ``context[1]``).
        """
        plan = _Plan(self, system, examples, context, history, user)
        while (tokens := self.counter.count_messages(plan.messages())) > self.budget:
            plan.shrink(int(tokens))
        return plan.result(int(tokens), tokens.exact)

    async def abuild(
        self,
        *,
        system: str | None = None,
        examples: Sequence[Example] = (),
        context: Sequence[str] = (),
        history: Sequence[MessageLike] = (),
        user: str,
    ) -> BuiltPrompt:
        """Async twin of :meth:`build` (the final counts use ``acount_messages``)."""
        plan = _Plan(self, system, examples, context, history, user)
        while (tokens := await self.counter.acount_messages(plan.messages())) > self.budget:
            plan.shrink(int(tokens))
        return plan.result(int(tokens), tokens.exact)


class _Plan:
    """One build: the validated inputs, the allocation, and what is kept of each part."""

    def __init__(
        self, b: PromptBuilder, system: Any, examples: Any, context: Any, history: Any, user: Any
    ) -> None:
        self.b, self.counter = b, b.counter
        # Texts are sized and cut with the per-message counts, which are local for every
        # counter (Claude's count() would call the API for each candidate cut).
        self.text_counter = b.counter if isinstance(b.counter, TiktokenCounter) else _MessageCount(b.counter)
        if system is not None and not isinstance(system, str):
            raise InvalidInputError("system", "must be a string or None", fix="pass the system prompt's text")
        if not isinstance(user, str):
            raise InvalidInputError("user", "must be a string", value=user, fix="pass the user's text")
        self.system, self.user_text, self.user_truncated = system, user, False
        self.docs: list[str] = list(_sequence("context", context))
        for i, d in enumerate(self.docs):
            if not isinstance(d, str):
                raise InvalidInputError(
                    f"context[{i}]",
                    f"must be a string, got {type(d).__name__}",
                    fix="pass each document's text",
                )
        self.examples = [_example(ex, i) for i, ex in enumerate(_sequence("examples", examples))]
        self.history = [_as_dict(m, f"history[{i}]") for i, m in enumerate(_sequence("history", history))]
        for i, m in enumerate(self.history):
            if m["role"] in ("system", "developer"):
                raise InvalidInputError(
                    f"history[{i}].role",
                    "system messages do not belong in history",
                    fix="pass it as system=...",
                )
            if m["role"] == "tool" and (i + 1 == len(self.history) or self.history[i + 1]["role"] != "tool"):
                try:  # a tool result must follow its call: fitting never separates them
                    unit_start(self.history, i)
                except InvalidMessageError as e:
                    where = e.field.replace("messages", "history", 1)
                    raise InvalidMessageError(where, e.problem, value=e.value, fix=e.fix) from e
        priming = self.counter.reply_priming
        self.sys_cost = 0 if system is None else self._cost([{"role": "system", "content": system}])
        user_cost = self._cost([{"role": "user", "content": user}]) + priming
        if self.sys_cost + user_cost > b.budget:
            if b.on_overflow == "raise":
                raise ContextOverflowError(
                    limit=b.budget, required=self.sys_cost + user_cost, what=_WHAT, fix=_OVERFLOW_FIX
                )
            self.user_text = self._cut_user(b.budget - self.sys_cost - priming, self.sys_cost + user_cost)
            self.user_truncated = True
            user_cost = self._cost([{"role": "user", "content": self.user_text}]) + priming
        self.ex_costs = [self._cost(ex) for ex in self.examples]
        demand = {
            "context": self._context_cost(self.docs),
            "examples": sum(self.ex_costs),
            "history": self._cost(self.history),
        }
        shares = {**b.shares, "system": self.sys_cost, "user": user_cost}
        fixed = {p: v for p, v in b.shares.items() if isinstance(v, int)}
        room = b.budget - self.sys_cost - user_cost
        if sum(fixed.values()) > room:  # fixed shares yield to system and user, pro rata
            shares.update({p: v * room // sum(fixed.values()) for p, v in fixed.items()})
        alloc = allocate_budget(b.max_tokens, reserve_output=b.reserve_output, shares=shares).fill(demand)
        self.allocation, budgets = alloc, alloc.as_dict()
        self.used = {"system": self.sys_cost, "user": user_cost, **demand}
        self.kept_docs, self.docs_truncated = self.docs, 0
        self.kept_examples, self.kept_history = list(range(len(self.examples))), self.history
        cut, carry = {p for p in _FLEX if demand[p] > budgets[p]}, 0
        for part in _FLEX:
            room = budgets[part] + carry
            if part in cut:
                self._fit(part, room)
            carry = room - self.used[part]
        for part in ("history", "context"):  # what the cuts left over tops up the cut parts
            if part in cut and carry > 0:
                before = self.used[part]
                self._fit(part, before + carry)
                carry -= self.used[part] - before

    def _cost(self, messages: Sequence[MessageLike]) -> int:
        return sum(int(self.counter.count_message(m)) for m in messages)

    def _system(self, docs: Sequence[str]) -> dict[str, Any] | None:
        text = self.system
        if docs:
            block = self.b.context_template.replace("{documents}", self.b.document_separator.join(docs))
            text = f"{text}\n\n{block}" if text else block
        return None if text is None else {"role": "system", "content": text}

    def _context_cost(self, docs: Sequence[str]) -> int:
        system = self._system(docs)
        return self._cost([system]) - self.sys_cost if docs and system else 0

    def _fit(self, part: str, room: int) -> None:
        if part == "context":
            self._fit_context(room)
        elif part == "history":
            kept: list[dict[str, Any]] = []
            if room > 0 and self.history:
                try:
                    kept = list(fit_messages(self.history, room + self.counter.reply_priming, self.counter))
                except ContextOverflowError:
                    kept = []  # not even the newest message fits
            self.kept_history, self.used["history"] = kept, self._cost(kept)
        else:
            # Drop examples one at a time (by the policy) until the rest fit, keeping a running
            # total: linear in the number of examples.
            costs, oldest = self.ex_costs, self.b.example_policy == "drop_oldest"
            first, end, total = 0, len(costs), sum(costs)
            while first < end and total > room:
                if oldest:
                    total -= costs[first]
                    first += 1
                else:
                    end -= 1
                    total -= costs[end]
            self.kept_examples, self.used["examples"] = list(range(first, end)), total

    def _fit_context(self, room: int) -> None:
        docs, full = self.docs, self._context_cost(self.docs)
        if full <= room:
            self.kept_docs, self.docs_truncated, self.used["context"] = docs, 0, full
            return
        sizes = [int(self.text_counter.count(d)) for d in docs]
        # floors[k]: the least the first k documents need (each its size, at most the minimum share).
        floors = list(accumulate((min(s, _MIN_DOCUMENT_TOKENS) for s in sizes), initial=0))
        overheads: dict[int, int] = {}

        def overhead(k: int) -> int:  # what the template and k - 1 separators cost
            if k not in overheads:
                overheads[k] = self._context_cost([""] * k)
            return overheads[k]

        # The most documents to try: the last k whose overhead and floors fit. Scanning down
        # from every document re-tokenises k separators per k (quadratic); when the overhead
        # is known to grow with k, so does overhead + floor, and a binary search finds that k
        # with O(log n) tokenisations. The scan below then starts there, as it would have.
        top = len(docs)
        if self._overhead_grows(sizes):
            low, top = 0, len(docs)  # k <= low fits (or low is 0); no k > top fits
            while low < top:
                mid = (low + top + 1) // 2
                if room - overhead(mid) >= floors[mid]:
                    low = mid
                else:
                    top = mid - 1
        for k in range(top, 0, -1):
            avail = room - overhead(k)
            if avail < floors[k]:
                continue  # too little for k documents: drop the last one
            for _ in range(4):  # a seam may tokenise differently: shrink by the excess and retry
                caps = _equal_shares(sizes[:k], avail)
                strategy = self.b.context_strategy
                kept = [
                    d if c >= s else truncate_text(d, c, strategy, counter=self.text_counter)
                    for d, c, s in zip(docs, caps, sizes, strict=False)
                ]
                cost = self._context_cost(kept)
                if cost <= room:
                    self.kept_docs, self.used["context"] = kept, cost
                    self.docs_truncated = sum(c < s for c, s in zip(caps, sizes, strict=False))
                    return
                avail -= cost - room
                if avail < 0:
                    break
        self.kept_docs, self.docs_truncated, self.used["context"] = [], 0, 0

    def _overhead_grows(self, sizes: Sequence[int]) -> bool:
        """Whether ``overhead(k) + floors[k]`` (see :meth:`_fit_context`) never falls as k grows.

        The floors never fall when no size is negative. The overhead is the tokens of the
        system text, then the default template's ``Context:`` line and k - 1 default
        separators. It never falls with the built-in counters (tiktoken; the estimates
        tokenise with tiktoken and scale by a positive factor, rounding up; a subclass is
        taken to count as its base): tiktoken splits text into pieces before merging tokens
        and no piece crosses the word ``Context``, so what precedes it costs the same for
        every k; after it come a piece of the colon and newlines, then pieces of ``---`` and
        newlines, all alike but the last (tests/unit/test_s27_prompt_builder_scaling.py checks
        every k up to thousands). Not so for other templates and separators: a separator of
        one repeated character (two newlines, a space) costs fewer tokens for some larger k,
        so then every k is tried, as before.
        """
        from .anthropic_counting import AnthropicTokenCounter
        from .estimating import EstimatingTokenCounter

        return (
            self.b.context_template == DEFAULT_CONTEXT_TEMPLATE
            and self.b.document_separator == DOCUMENT_SEPARATOR
            and isinstance(self.counter, TiktokenCounter | EstimatingTokenCounter | AnthropicTokenCounter)
            and all(s >= 0 for s in sizes)
        )

    def _cut_user(self, room: int, required: int) -> str:
        limit = room - self._cost([{"role": "user", "content": ""}])
        while limit >= 0:
            text = truncate_text(self.user_text, limit, "keep_end", counter=self.text_counter)
            over = self._cost([{"role": "user", "content": text}]) - room
            if over <= 0:
                if not has_visible_text(text):  # the question would vanish: no fit (a shorter
                    break  # cut keeps less of the same end)
                return text
            limit -= over
        raise ContextOverflowError(
            limit=self.b.budget,
            required=required,
            what=_WHAT,
            fix="raise max_tokens, reserve fewer output tokens or shorten the system prompt: cut to "
            "fit, the user input would keep none of its text (only blanks, or nothing)",
        )

    def shrink(self, tokens: int) -> None:
        """Cut more after the final count came out ``tokens - budget`` over."""
        excess = tokens - self.b.budget
        if self.kept_history:
            self._fit("history", self.used["history"] - excess)
        elif self.kept_docs:
            self._fit_context(self.used["context"] - excess)
        elif self.kept_examples:
            self._fit("examples", self.used["examples"] - excess)
        elif self.b.on_overflow == "truncate" and self.user_text:
            priming = self.counter.reply_priming
            self.user_text = self._cut_user(self.used["user"] - priming - excess, tokens)
            self.user_truncated = True
            self.used["user"] = self._cost([{"role": "user", "content": self.user_text}]) + priming
        else:
            raise ContextOverflowError(limit=self.b.budget, required=tokens, what=_WHAT, fix=_OVERFLOW_FIX)

    def messages(self) -> list[dict[str, Any]]:
        system = self._system(self.kept_docs)
        out = [system] if system is not None else []
        for i in self.kept_examples:
            out.extend(self.examples[i])
        return [*out, *self.kept_history, {"role": "user", "content": self.user_text}]

    def result(self, tokens: int, exact: bool) -> BuiltPrompt:
        return BuiltPrompt(
            messages=self.messages(),
            tokens=tokens,
            budget=self.b.budget,
            allocation=self.allocation,
            used={p: self.used[p] for p in ("system", "examples", "context", "history", "user")},
            exact=exact,
            documents_truncated=self.docs_truncated if self.kept_docs else 0,
            documents_dropped=len(self.docs) - len(self.kept_docs),
            examples_dropped=len(self.examples) - len(self.kept_examples),
            history_dropped=len(self.history) - len(self.kept_history),
            user_truncated=self.user_truncated,
        )


class _MessageCount:
    """``count(text)``: the tokens ``text`` adds to a user message, by ``count_message``."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter
        self.framing = int(counter.count_message({"role": "user", "content": ""}))

    def count(self, text: str) -> int:
        return int(self.counter.count_message({"role": "user", "content": text})) - self.framing


def _equal_shares(sizes: Sequence[int], avail: int) -> list[int]:
    """Split ``avail`` equally; a document needing less than its share keeps its size."""
    caps = [0] * len(sizes)
    left, remaining = avail, len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i]):
        caps[i] = min(sizes[i], left // remaining)
        left -= caps[i]
        remaining -= 1
    return caps


def _sequence(field: str, value: object) -> Sequence[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise InvalidInputError(field, "must be a list", value=value, fix="wrap a single item in a list")
    return value


def _example(example: object, i: int) -> list[dict[str, Any]]:
    if isinstance(example, tuple | list) and all(isinstance(x, str) for x in example):
        if len(example) == 2:
            return [{"role": "user", "content": example[0]}, {"role": "assistant", "content": example[1]}]
        example = None  # strings, but not a pair
    if not example or isinstance(example, str | bytes | Mapping) or not isinstance(example, Sequence):
        raise InvalidInputError(
            f"examples[{i}]",
            "must be a (user, assistant) pair of strings or a non-empty list of messages",
            fix='e.g. ("2+2?", "4")',
        )
    return [_as_dict(m, f"examples[{i}][{j}]") for j, m in enumerate(example)]


def _as_dict(raw: Any, where: str) -> dict[str, Any]:
    """A validated OpenAI-style dict: the caller's dict copied, or a Message serialised."""
    m = to_message(raw, where=where)  # validates, naming ``where``
    if m.file_tokens is not None:  # the built messages are sent: a stand-in's text is not the content
        raise InvalidInputError(
            where,
            "is a stand-in for content the core cannot represent (a file or PDF block)",
            fix="build the prompt from messages the core can represent, or fit the host's own "
            "messages with fit_messages",
        )
    return dict(raw) if isinstance(raw, Mapping) else to_openai_dict(m)
