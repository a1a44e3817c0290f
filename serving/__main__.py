from lake.entry import run_main
from serving.app import main

run_main(main)
