from __future__ import annotations


def main() -> None:
    from tbctl.cli.app import run

    run()


if __name__ == "__main__":
    main()
