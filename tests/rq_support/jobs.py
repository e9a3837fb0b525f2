"""Jobs for the RQ acceptance test, run by a real ``rq worker``."""


def add(a: int, b: int) -> int:
    return a + b


def boom() -> None:
    raise ValueError("boom")
