"""`make bench`: run every benchmark module in this folder."""

from benchmarks import trainer_overhead

if __name__ == "__main__":
    trainer_overhead.main()
