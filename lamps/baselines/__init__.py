"""The schedulers LAMPS is compared with, as vLLM scheduler classes on the same pause mechanism.

Each module follows its system's own code and says, in its docstring, which file and lines
each rule comes from and what differs on vLLM V1:

- `infercept.InferCeptScheduler`: InferCept as its code does it (`WukLab/InferCept`);
  `infercept_paper.InferCeptPaperScheduler`: as its paper describes it. Both use
  `infercept_model` (its formulas and constants) and `passive_swap` (its eviction).
- `lamps_authors.LampsAuthorsScheduler`: LAMPS as its authors' code does it
  (`mars-repository/mars-codebase`), over `ordered_queue.OrderedQueue`.
- `continuum.ContinuumScheduler`: Continuum (`Hanchenli/vllm-continuum`), with
  `continuum_ttl` (its TTL rules) and `program_pins.ProgramPins` (stateless-API pins, reusable
  by any scheduler that serves turns as separate requests).

They subclass vLLM's synchronous `Scheduler` (run vLLM with `--no-async-scheduling`). Swapping
baselines need the LAMPS swap connector (`lamps.connector`); without it they discard instead.
"""
