import asyncio

import beluga_flows as bf


@bf.step(retry_policy=bf.RetryPolicy(max_attempts=4, retry_on=(ConnectionError,)), timeout=10)
def fetch(query: dict) -> dict:
    if not query["input"]:
        raise ValueError("which city?")
    return {"city": query["input"], "temp": 21}  # a flaky HTTP call in real life


@bf.step
async def advise(weather: dict) -> str:
    return "shorts" if weather["temp"] > 18 else "coat"


@bf.flow(name="what-to-wear", timeout=60)
async def what_to_wear(city: str) -> str:
    return await advise(await fetch({"input": city}))  # each step: a Prefect task run


wear = bf.Chain([fetch, advise], name="wear-chain")  # or: fetch | advise

if __name__ == "__main__":
    print(asyncio.run(what_to_wear("Lisbon")))  # one flow run, two task runs
    print(wear.invoke("Porto"))  # a chain outside a flow: its own flow run
    try:
        wear.invoke("")
    except bf.OrchestratorError as err:  # [execution_failed]: step 0 'fetch' failed: which city?
        print(err.code, repr(err.__cause__))
