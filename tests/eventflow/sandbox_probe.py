"""A workflow that says whether it runs in the SDK's sandbox (a module of its own, which the sandbox re-imports)."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="SandboxProbe")
class SandboxProbe:
    @workflow.run
    async def run(self) -> bool:
        return workflow.unsafe.in_sandbox()
