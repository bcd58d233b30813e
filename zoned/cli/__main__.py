from zoned.cli import console

console()
