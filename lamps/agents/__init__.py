"""``lamps agents``: replays coding-agent traces against any OpenAI-compatible server.

The client counterpart of ``lamps replay --users``: the same traces, closed-loop users,
sub-agents, gaps and token ids (``lamps.replay.flows``, ``lamps.replay.traced_tokens``), sent as
real streaming ``/v1/completions`` requests, and measured into the replay's rows, table and
plots. ``conversations`` loads and scales the traces and maps token ids, ``client`` sends one
turn (timed, retried), ``learned_hints`` learns the LAMPS hints online, ``loop`` drives the users
on the wall clock, ``results`` turns a run into rows and files, ``progress`` prints the progress
line and ``command`` is the subcommand. Nothing here imports vLLM: an operator may run the
client on another machine (it needs ``aiohttp``: ``pip install 'vllm-lamps[agents]'``).
"""
