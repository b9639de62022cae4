from lapse_cli.main import app

app()
