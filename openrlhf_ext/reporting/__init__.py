"""What a run leaves behind and shows: the metrics file and its curves, the console, failure reports, mlflow."""
