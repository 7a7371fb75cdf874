"""RNN Lab's library: everything the DVC stages (stages/) and the other command-line tools (tools/) call.

Importing it has no side effects: the entry points configure the math libraries themselves
(rnnlab.runtime.environment.configure) before anything loads torch. docs/pipeline.md maps the
subpackages and the direction of their imports.
"""
